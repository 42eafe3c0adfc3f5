package checkpoints

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/diskio"
)

// Entry is one tensor to write. Data is called once, when the tensor's turn
// comes, so a writer holds one tensor in memory at a time. Stream, when set
// instead, writes the tensor's Size() bytes itself, so even one tensor
// need not be in memory whole.
type Entry struct {
	Name   string
	DType  backend.DType
	Shape  []int
	Data   func() ([]byte, error)
	Stream func(w io.Writer) error
}

// Size is the number of data bytes.
func (e Entry) Size() int64 { return int64(backend.Numel(e.Shape)) * int64(e.DType.Size()) }

// FloatEntry encodes float32 values as dtype dt when written.
//
// The values are encoded a block at a time as they are written, so a large
// tensor is never held twice.
func FloatEntry(name string, dt backend.DType, shape []int, v []float32) Entry {
	return Entry{Name: name, DType: dt, Shape: shape, Stream: func(w io.Writer) error {
		const block = 1 << 16
		var b []byte
		for i := 0; i < len(v); i += block {
			var err error
			if b, err = encodeFloat32Into(b, dt, v[i:min(len(v), i+block)]); err != nil {
				return err
			}
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
		return nil
	}}
}

// Int64Entry writes int64 values.
func Int64Entry(name string, shape []int, v []int64) Entry {
	return Entry{Name: name, DType: backend.I64, Shape: shape, Data: func() ([]byte, error) {
		b := make([]byte, 8*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
		}
		return b, nil
	}}
}

// header builds the safetensors header for entries, padded to 8 bytes.
func header(entries []Entry, meta map[string]string) ([]byte, error) {
	type ent struct {
		DType       string   `json:"dtype"`
		Shape       []int    `json:"shape"`
		DataOffsets [2]int64 `json:"data_offsets"`
	}
	// Encode entries in the order given (json.Marshal of a map would sort
	// them); the data follows in the same order.
	var sb strings.Builder
	sb.WriteByte('{')
	if len(meta) > 0 {
		m, err := json.Marshal(meta)
		if err != nil {
			return nil, err
		}
		sb.WriteString(`"__metadata__":`)
		sb.Write(m)
	}
	var off int64
	seen := map[string]bool{}
	for i, e := range entries {
		if seen[e.Name] {
			return nil, fmt.Errorf("checkpoints: tensor %q written twice", e.Name)
		}
		seen[e.Name] = true
		if i > 0 || len(meta) > 0 {
			sb.WriteByte(',')
		}
		k, _ := json.Marshal(e.Name)
		shape := e.Shape
		if shape == nil {
			shape = []int{}
		}
		v, err := json.Marshal(ent{DType: e.DType.String(), Shape: shape, DataOffsets: [2]int64{off, off + e.Size()}})
		if err != nil {
			return nil, err
		}
		sb.Write(k)
		sb.WriteByte(':')
		sb.Write(v)
		off += e.Size()
	}
	sb.WriteByte('}')
	for sb.Len()%8 != 0 {
		sb.WriteByte(' ')
	}
	return []byte(sb.String()), nil
}

// WriteFile writes entries to one safetensors file, atomically.
func WriteFile(path string, entries []Entry, meta map[string]string) error {
	h, err := header(entries, meta)
	if err != nil {
		return err
	}
	return diskio.WriteAtomic(path, func(w io.Writer) error {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(h)))
		if _, err := w.Write(n[:]); err != nil {
			return err
		}
		if _, err := w.Write(h); err != nil {
			return err
		}
		for _, e := range entries {
			if e.Stream != nil {
				cw := &countWriter{w: w}
				if err := e.Stream(cw); err != nil {
					return fmt.Errorf("checkpoints: tensor %q: %w", e.Name, err)
				}
				if cw.n != e.Size() {
					return fmt.Errorf("checkpoints: tensor %q: streamed %d bytes for shape %v of %v, want %d", e.Name, cw.n, e.Shape, e.DType, e.Size())
				}
				continue
			}
			b, err := e.Data()
			if err != nil {
				return fmt.Errorf("checkpoints: tensor %q: %w", e.Name, err)
			}
			if int64(len(b)) != e.Size() {
				return fmt.Errorf("checkpoints: tensor %q: %d bytes for shape %v of %v, want %d", e.Name, len(b), e.Shape, e.DType, e.Size())
			}
			if _, err := w.Write(b); err != nil {
				return fmt.Errorf("checkpoints: writing %s: %w", path, err)
			}
		}
		return nil
	})
}

// WriteSharded writes entries into dir as model.safetensors when they fit in
// maxShard bytes, else as model-0000i-of-0000n.safetensors shards of at most
// maxShard bytes each (a single larger tensor gets its own shard) plus the
// index file, written last. Returns the file names written.
func WriteSharded(dir string, entries []Entry, maxShard int64, meta map[string]string) ([]string, error) {
	var shards [][]Entry
	var cur []Entry
	var curSize, total int64
	for _, e := range entries {
		if len(cur) > 0 && maxShard > 0 && curSize+e.Size() > maxShard {
			shards = append(shards, cur)
			cur, curSize = nil, 0
		}
		cur = append(cur, e)
		curSize += e.Size()
		total += e.Size()
	}
	shards = append(shards, cur)
	if len(shards) == 1 {
		if err := WriteFile(filepath.Join(dir, "model.safetensors"), entries, meta); err != nil {
			return nil, err
		}
		return []string{"model.safetensors"}, nil
	}
	weightMap := map[string]string{}
	var names []string
	for i, s := range shards {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		if err := WriteFile(filepath.Join(dir, name), s, meta); err != nil {
			return nil, err
		}
		for _, e := range s {
			weightMap[e.Name] = name
		}
		names = append(names, name)
	}
	idx, err := json.MarshalIndent(map[string]any{
		"metadata":   map[string]any{"total_size": total},
		"weight_map": weightMap,
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := diskio.WriteFileAtomic(filepath.Join(dir, IndexFile), append(idx, '\n')); err != nil {
		return nil, err
	}
	return append(names, IndexFile), nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
