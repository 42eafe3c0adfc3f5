package checkpoints

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/minitron/minitron/backend"
)

// Tensors is a set of safetensors files seen as one name space: a single
// file, or the shards listed by a model.safetensors.index.json.
type Tensors struct {
	// Source is the file or directory the set was opened from.
	Source string
	files  []*File
	byName map[string]*File
	names  []string
}

// IndexFile is the name of the shard index of a sharded checkpoint.
const IndexFile = "model.safetensors.index.json"

// Open opens tensors from a .safetensors file, or from a directory holding
// model.safetensors or a sharded checkpoint with model.safetensors.index.json.
func Open(path string) (*Tensors, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	if !st.IsDir() {
		f, err := OpenFile(path)
		if err != nil {
			return nil, err
		}
		return newTensors(path, []*File{f})
	}
	if idx := filepath.Join(path, IndexFile); exists(idx) {
		return openIndexed(path, idx)
	}
	if single := filepath.Join(path, "model.safetensors"); exists(single) {
		f, err := OpenFile(single)
		if err != nil {
			return nil, err
		}
		return newTensors(path, []*File{f})
	}
	for _, name := range []string{"pytorch_model.bin", "pytorch_model.bin.index.json"} {
		if exists(filepath.Join(path, name)) {
			return nil, fmt.Errorf("checkpoints: %s holds %s, a PyTorch pickle checkpoint; convert it first with `minitron convert --from %s --out DIR`", path, name, path)
		}
	}
	return nil, fmt.Errorf("checkpoints: %s has neither model.safetensors nor %s", path, IndexFile)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func openIndexed(dir, idx string) (*Tensors, error) {
	b, err := os.ReadFile(idx)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &index); err != nil {
		return nil, fmt.Errorf("checkpoints: %s: invalid JSON: %w", idx, err)
	}
	if len(index.WeightMap) == 0 {
		return nil, fmt.Errorf("checkpoints: %s: empty weight_map", idx)
	}
	// Tensors in name order: a bad entry is reported the same way each time.
	tensors := make([]string, 0, len(index.WeightMap))
	for name := range index.WeightMap {
		tensors = append(tensors, name)
	}
	sort.Strings(tensors)
	shards := map[string]bool{}
	for _, name := range tensors {
		f := index.WeightMap[name]
		if strings.Contains(f, "/") || strings.Contains(f, `\`) || f == ".." {
			return nil, fmt.Errorf("checkpoints: %s: shard name %q must be a file in the same directory", idx, f)
		}
		shards[f] = true
	}
	names := make([]string, 0, len(shards))
	for f := range shards {
		names = append(names, f)
	}
	sort.Strings(names)
	var files []*File
	for _, n := range names {
		f, err := OpenFile(filepath.Join(dir, n))
		if err != nil {
			for _, o := range files {
				o.Close()
			}
			return nil, err
		}
		files = append(files, f)
	}
	t, err := newTensors(dir, files)
	if err != nil {
		return nil, err
	}
	for _, name := range tensors {
		shard := index.WeightMap[name]
		f, ok := t.byName[name]
		if !ok || filepath.Base(f.Path) != shard {
			t.Close()
			return nil, fmt.Errorf("checkpoints: %s lists tensor %q in %s, but that shard does not hold it", idx, name, shard)
		}
	}
	return t, nil
}

func newTensors(src string, files []*File) (*Tensors, error) {
	t := &Tensors{Source: src, files: files, byName: map[string]*File{}}
	for _, f := range files {
		for _, i := range f.Tensors {
			if prev, dup := t.byName[i.Name]; dup {
				t.Close()
				return nil, fmt.Errorf("checkpoints: tensor %q is in both %s and %s", i.Name, prev.Path, f.Path)
			}
			t.byName[i.Name] = f
			t.names = append(t.names, i.Name)
		}
	}
	sort.Strings(t.names)
	return t, nil
}

// Close closes every file.
func (t *Tensors) Close() error {
	var errs []error
	for _, f := range t.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// Names lists every tensor name, sorted.
func (t *Tensors) Names() []string { return t.names }

// Files lists the open files.
func (t *Tensors) Files() []*File { return t.files }

// Info describes a tensor.
func (t *Tensors) Info(name string) (*Info, bool) {
	f, ok := t.byName[name]
	if !ok {
		return nil, false
	}
	return f.Info(name)
}

// Bytes returns the raw data of a tensor (see File.Bytes).
func (t *Tensors) Bytes(name string) ([]byte, error) {
	f, ok := t.byName[name]
	if !ok {
		return nil, fmt.Errorf("checkpoints: %s: no tensor %q", t.Source, name)
	}
	return f.Bytes(name)
}

// Release drops a tensor's pages from memory (see File.Release).
func (t *Tensors) Release(name string) {
	if f, ok := t.byName[name]; ok {
		f.Release(name)
	}
}

// ResidentFraction estimates the part of the files' bytes the page cache
// holds now, from a sample of pages (nothing is read), or -1 where the
// system cannot tell.
func (t *Tensors) ResidentFraction() float64 {
	var in, total float64
	for _, f := range t.files {
		r := f.m.residentFraction(512)
		if r < 0 {
			return -1
		}
		size := float64(f.Size())
		in, total = in+r*size, total+size
	}
	if total == 0 {
		return 1
	}
	return in / total
}

// Float32 reads a float tensor of any float dtype as float32, checking its
// shape when want is given.
func (t *Tensors) Float32(name string, want ...int) ([]float32, error) {
	info, ok := t.Info(name)
	if !ok {
		return nil, fmt.Errorf("checkpoints: %s: missing tensor %q", t.Source, name)
	}
	if want != nil && !sameShape(info.Shape, want) {
		return nil, fmt.Errorf("checkpoints: %s: tensor %q has shape %v, the config implies %v", info.File, name, info.Shape, want)
	}
	raw, err := t.Bytes(name)
	if err != nil {
		return nil, err
	}
	out, err := DecodeFloat32(info.DType, raw)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %s: tensor %q: %w", info.File, name, err)
	}
	return out, nil
}

// Int64 reads an integer tensor (I64 or I32) as int64.
func (t *Tensors) Int64(name string) ([]int64, []int, error) {
	info, ok := t.Info(name)
	if !ok {
		return nil, nil, fmt.Errorf("checkpoints: %s: missing tensor %q", t.Source, name)
	}
	raw, err := t.Bytes(name)
	if err != nil {
		return nil, nil, err
	}
	out := make([]int64, info.Numel())
	switch info.DType {
	case backend.I64:
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
		}
	case backend.I32:
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(raw[4*i:])))
		}
	default:
		return nil, nil, fmt.Errorf("checkpoints: %s: tensor %q is %v, want an integer tensor (I64 or I32)", info.File, name, info.DType)
	}
	return out, info.Shape, nil
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// DecodeFloat32 converts little-endian data of a float dtype to float32.
func DecodeFloat32(dt backend.DType, raw []byte) ([]float32, error) {
	if !dt.IsFloat() {
		return nil, fmt.Errorf("dtype %v is not a float type", dt)
	}
	n := len(raw) / dt.Size()
	out := make([]float32, n)
	switch dt {
	case backend.F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case backend.BF16:
		for i := range out {
			out[i] = backend.BF16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case backend.F16:
		for i := range out {
			out[i] = backend.F16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case backend.F64:
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:])))
		}
	}
	return out, nil
}

// EncodeFloat32 converts float32 values to little-endian data of dtype dt.
func EncodeFloat32(dt backend.DType, v []float32) ([]byte, error) {
	return encodeFloat32Into(nil, dt, v)
}

// encodeFloat32Into is EncodeFloat32 reusing buf's storage when it is
// large enough.
func encodeFloat32Into(buf []byte, dt backend.DType, v []float32) ([]byte, error) {
	n := len(v) * dt.Size()
	out := buf[:0]
	if cap(out) < n {
		out = make([]byte, n)
	}
	out = out[:n]
	switch dt {
	case backend.F32:
		for i, x := range v {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(x))
		}
	case backend.BF16:
		for i, x := range v {
			binary.LittleEndian.PutUint16(out[2*i:], backend.F32ToBF16(x))
		}
	case backend.F16:
		for i, x := range v {
			binary.LittleEndian.PutUint16(out[2*i:], backend.F32ToF16(x))
		}
	case backend.F64:
		for i, x := range v {
			binary.LittleEndian.PutUint64(out[8*i:], math.Float64bits(float64(x)))
		}
	default:
		return nil, fmt.Errorf("checkpoints: cannot encode floats as %v", dt)
	}
	return out, nil
}
