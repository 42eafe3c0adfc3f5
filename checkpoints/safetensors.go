// Package checkpoints reads and writes model files: safetensors (memory-mapped,
// lazy, single or sharded with an index, or read in spans of kept rows with
// many reads in flight), Hugging Face checkpoint directories, PyTorch .bin
// checkpoints (read) and GGUF (written). Files are written through package
// diskio, so none is ever left half-written.
package checkpoints

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"

	"github.com/minitron/minitron/backend"
)

// maxHeader bounds the JSON header, as the safetensors format does (100 MB).
const maxHeader = 100 << 20

// Info describes one tensor in a safetensors file.
type Info struct {
	Name  string
	DType backend.DType
	Shape []int
	// Begin and End are byte offsets of the data within the file.
	Begin, End int64
	// File is the path of the file holding the tensor.
	File string
}

// Numel is the number of elements.
func (i *Info) Numel() int { return backend.Numel(i.Shape) }

// Header is the parsed header of a safetensors file.
type Header struct {
	Metadata map[string]string
	Tensors  []*Info // in file order (by offset)
}

type rawEntry struct {
	DType       string  `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// safetensorsDType maps the names the format uses to ours; names the format
// defines that we cannot compute with are reported as unsupported.
func safetensorsDType(s string) (backend.DType, bool) {
	switch s {
	case "F32":
		return backend.F32, true
	case "BF16":
		return backend.BF16, true
	case "F16":
		return backend.F16, true
	case "I32":
		return backend.I32, true
	case "I64":
		return backend.I64, true
	case "F64":
		return backend.F64, true
	}
	return backend.Invalid, false
}

// ParseHeader validates and decodes a safetensors header. buf holds the
// first bytes of the file (at least 8 + header length); fileSize is the size
// of the whole file. name is used in error messages.
func ParseHeader(name string, buf []byte, fileSize int64) (*Header, error) {
	if len(buf) < 8 || fileSize < 8 {
		return nil, fmt.Errorf("checkpoints: %s: file of %d bytes is too short to be safetensors (truncated?)", name, fileSize)
	}
	n := binary.LittleEndian.Uint64(buf[:8])
	if n > maxHeader {
		return nil, fmt.Errorf("checkpoints: %s: header length %d exceeds the 100 MB limit; the file is not safetensors or is corrupt", name, n)
	}
	if int64(n)+8 > fileSize {
		return nil, fmt.Errorf("checkpoints: %s: header length %d runs past the end of the %d-byte file (truncated?)", name, n, fileSize)
	}
	if uint64(len(buf)) < 8+n {
		return nil, fmt.Errorf("checkpoints: %s: header needs %d bytes, got %d", name, 8+n, len(buf))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(buf[8:8+n], &raw); err != nil {
		return nil, fmt.Errorf("checkpoints: %s: invalid JSON header: %w", name, err)
	}
	dataLen := fileSize - 8 - int64(n)
	h := &Header{}
	// Entries are checked in file order (by data offset, then name), so a
	// damaged file always reports its first bad tensor.
	type entry struct {
		key string
		e   rawEntry
		err error
	}
	var entries []entry
	for key, msg := range raw {
		if key == "__metadata__" {
			if err := json.Unmarshal(msg, &h.Metadata); err != nil {
				return nil, fmt.Errorf("checkpoints: %s: __metadata__ must map strings to strings: %w", name, err)
			}
			continue
		}
		en := entry{key: key}
		en.err = json.Unmarshal(msg, &en.e)
		entries = append(entries, en)
	}
	at := func(en entry) int64 {
		if en.err == nil && len(en.e.DataOffsets) == 2 {
			return en.e.DataOffsets[0]
		}
		return math.MaxInt64
	}
	sort.Slice(entries, func(i, j int) bool {
		a, b := at(entries[i]), at(entries[j])
		if a != b {
			return a < b
		}
		return entries[i].key < entries[j].key
	})
	for _, en := range entries {
		key, e := en.key, en.e
		if en.err != nil {
			return nil, fmt.Errorf("checkpoints: %s: tensor %q: invalid entry: %w", name, key, en.err)
		}
		dt, ok := safetensorsDType(e.DType)
		if !ok {
			return nil, fmt.Errorf("checkpoints: %s: tensor %q has dtype %q; supported: F32, BF16, F16, F64, I32, I64", name, key, e.DType)
		}
		if len(e.DataOffsets) != 2 {
			return nil, fmt.Errorf("checkpoints: %s: tensor %q: data_offsets must be [begin, end]", name, key)
		}
		numel := int64(1)
		shape := make([]int, len(e.Shape))
		for i, d := range e.Shape {
			if d < 0 || d > math.MaxInt32*int64(64) {
				return nil, fmt.Errorf("checkpoints: %s: tensor %q has invalid dimension %d in shape %v", name, key, d, e.Shape)
			}
			shape[i] = int(d)
			if d != 0 && numel > math.MaxInt64/8/d {
				return nil, fmt.Errorf("checkpoints: %s: tensor %q: shape %v overflows", name, key, e.Shape)
			}
			numel *= d
		}
		b, end := e.DataOffsets[0], e.DataOffsets[1]
		if b < 0 || end < b || end > dataLen {
			return nil, fmt.Errorf("checkpoints: %s: tensor %q: data offsets [%d, %d] fall outside the %d data bytes (truncated file?)", name, key, b, end, dataLen)
		}
		if want := numel * int64(dt.Size()); end-b != want {
			return nil, fmt.Errorf("checkpoints: %s: tensor %q: %d bytes for shape %v of %v, want %d", name, key, end-b, e.Shape, dt, want)
		}
		h.Tensors = append(h.Tensors, &Info{Name: key, DType: dt, Shape: shape, Begin: 8 + int64(n) + b, End: 8 + int64(n) + end, File: name})
	}
	sort.Slice(h.Tensors, func(i, j int) bool {
		a, b := h.Tensors[i], h.Tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		return a.End < b.End
	})
	for i := 1; i < len(h.Tensors); i++ {
		p, c := h.Tensors[i-1], h.Tensors[i]
		if c.Begin < p.End {
			return nil, fmt.Errorf("checkpoints: %s: tensors %q and %q overlap", name, p.Name, c.Name)
		}
	}
	return h, nil
}

// File is an open safetensors file. Opening reads only the header; tensor
// data is memory-mapped and read when asked for.
type File struct {
	Path string
	*Header
	size   int64
	byName map[string]*Info
	m      mapping
}

// OpenFile opens a safetensors file.
func OpenFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	size := st.Size()
	var pre [8]byte
	if _, err := f.ReadAt(pre[:], 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("checkpoints: %s: file of %d bytes is too short to be safetensors (truncated?)", path, size)
	}
	n := binary.LittleEndian.Uint64(pre[:])
	if n > maxHeader || int64(n)+8 > size {
		f.Close()
		_, err := ParseHeader(path, pre[:], size)
		return nil, err
	}
	buf := make([]byte, 8+n)
	if _, err := f.ReadAt(buf, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("checkpoints: %s: reading header: %w", path, err)
	}
	h, err := ParseHeader(path, buf, size)
	if err != nil {
		f.Close()
		return nil, err
	}
	m, err := newMapping(f, size)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("checkpoints: %s: %w", path, err)
	}
	sf := &File{Path: path, Header: h, size: size, byName: make(map[string]*Info, len(h.Tensors)), m: m}
	for _, t := range h.Tensors {
		sf.byName[t.Name] = t
	}
	return sf, nil
}

// Size is the file's size in bytes.
func (f *File) Size() int64 { return f.size }

// Close unmaps the file. Slices returned by Bytes become invalid.
func (f *File) Close() error { return f.m.close() }

// Info returns the description of a tensor.
func (f *File) Info(name string) (*Info, bool) {
	i, ok := f.byName[name]
	return i, ok
}

// Bytes returns the raw little-endian data of a tensor. On systems with mmap
// it is a view of the mapping, valid until Close; do not modify it.
func (f *File) Bytes(name string) ([]byte, error) {
	i, ok := f.byName[name]
	if !ok {
		return nil, fmt.Errorf("checkpoints: %s: no tensor %q", f.Path, name)
	}
	return f.m.slice(i.Begin, i.End)
}

// Release tells the system the tensor's pages are no longer needed, so a
// model converted tensor by tensor does not keep the file resident.
func (f *File) Release(name string) {
	if i, ok := f.byName[name]; ok {
		f.m.release(i.Begin, i.End)
	}
}
