package checkpoints

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"sort"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/diskio"
)

// GGUF version 3 files, as llama.cpp reads them: a header, typed metadata
// key/values, tensor descriptions, then tensor data aligned to 32 bytes.

// GGML tensor types written and read here.
const (
	GGMLF32  uint32 = 0
	GGMLF16  uint32 = 1
	GGMLQ8_0 uint32 = 8
	GGMLBF16 uint32 = 30
)

// GGUF metadata value types.
const (
	ggufU8   = 0
	ggufI8   = 1
	ggufU16  = 2
	ggufI16  = 3
	ggufU32  = 4
	ggufI32  = 5
	ggufF32  = 6
	ggufBool = 7
	ggufStr  = 8
	ggufArr  = 9
	ggufU64  = 10
	ggufI64  = 11
	ggufF64  = 12
)

const ggufMagic = 0x46554747 // "GGUF"

// GGUFAlignment is the data alignment (llama.cpp's default).
const GGUFAlignment = 32

// q8Block is the number of values in a q8_0 block.
const q8Block = 32

// GGUFValue is a metadata value: uint32, int32, uint64, float32, bool,
// string, or slices of string, float32, int32.
type GGUFValue any

// GGUFKV is one metadata entry.
type GGUFKV struct {
	Key   string
	Value GGUFValue
}

// GGUFTensor is a tensor to write: float32 values of shape (row-major,
// outermost first), stored as Type.
type GGUFTensor struct {
	Name  string
	Shape []int
	Type  uint32
	// Data produces the float32 values when the tensor is written.
	Data func() ([]float32, error)
}

// GGUFTypeSize returns the bytes of n values of a GGML type.
func GGUFTypeSize(t uint32, n int) (int64, error) {
	switch t {
	case GGMLF32:
		return int64(4 * n), nil
	case GGMLF16, GGMLBF16:
		return int64(2 * n), nil
	case GGMLQ8_0:
		if n%q8Block != 0 {
			return 0, fmt.Errorf("q8_0 needs a multiple of %d values, got %d", q8Block, n)
		}
		return int64(n / q8Block * 34), nil
	}
	return 0, fmt.Errorf("unsupported GGML type %d", t)
}

// EncodeGGML encodes float32 values as a GGML type.
func EncodeGGML(t uint32, v []float32) ([]byte, error) {
	switch t {
	case GGMLF32:
		return EncodeFloat32(backend.F32, v)
	case GGMLF16:
		return EncodeFloat32(backend.F16, v)
	case GGMLBF16:
		return EncodeFloat32(backend.BF16, v)
	case GGMLQ8_0:
		if len(v)%q8Block != 0 {
			return nil, fmt.Errorf("q8_0 needs a multiple of %d values, got %d", q8Block, len(v))
		}
		out := make([]byte, 0, len(v)/q8Block*34)
		for b := 0; b < len(v); b += q8Block {
			blk := v[b : b+q8Block]
			var amax float32
			for _, x := range blk {
				amax = max(amax, float32(math.Abs(float64(x))))
			}
			d := amax / 127
			id := float32(0)
			if d != 0 {
				id = 1 / d
			}
			out = binary.LittleEndian.AppendUint16(out, backend.F32ToF16(d))
			for _, x := range blk {
				// llama.cpp rounds half away from zero (roundf).
				out = append(out, byte(int8(math.Round(float64(x*id)))))
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported GGML type %d", t)
}

// DecodeGGML decodes n values of a GGML type to float32.
func DecodeGGML(t uint32, b []byte, n int) ([]float32, error) {
	switch t {
	case GGMLF32:
		return DecodeFloat32(backend.F32, b[:4*n])
	case GGMLF16:
		return DecodeFloat32(backend.F16, b[:2*n])
	case GGMLBF16:
		return DecodeFloat32(backend.BF16, b[:2*n])
	case GGMLQ8_0:
		out := make([]float32, n)
		for blk := 0; blk < n/q8Block; blk++ {
			p := b[blk*34:]
			d := backend.F16ToF32(binary.LittleEndian.Uint16(p))
			for j := range q8Block {
				out[blk*q8Block+j] = d * float32(int8(p[2+j]))
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported GGML type %d", t)
}

type ggufWriter struct {
	w   *bufio.Writer
	n   int64
	err error
}

func (g *ggufWriter) write(b []byte) {
	if g.err == nil {
		var k int
		k, g.err = g.w.Write(b)
		g.n += int64(k)
	}
}
func (g *ggufWriter) u32(v uint32) { g.write(binary.LittleEndian.AppendUint32(nil, v)) }
func (g *ggufWriter) u64(v uint64) { g.write(binary.LittleEndian.AppendUint64(nil, v)) }
func (g *ggufWriter) str(s string) { g.u64(uint64(len(s))); g.write([]byte(s)) }

func (g *ggufWriter) value(v GGUFValue) error {
	switch x := v.(type) {
	case uint32:
		g.u32(ggufU32)
		g.u32(x)
	case int32:
		g.u32(ggufI32)
		g.u32(uint32(x))
	case uint64:
		g.u32(ggufU64)
		g.u64(x)
	case float32:
		g.u32(ggufF32)
		g.u32(math.Float32bits(x))
	case bool:
		g.u32(ggufBool)
		if x {
			g.write([]byte{1})
		} else {
			g.write([]byte{0})
		}
	case string:
		g.u32(ggufStr)
		g.str(x)
	case []string:
		g.u32(ggufArr)
		g.u32(ggufStr)
		g.u64(uint64(len(x)))
		for _, s := range x {
			g.str(s)
		}
	case []float32:
		g.u32(ggufArr)
		g.u32(ggufF32)
		g.u64(uint64(len(x)))
		for _, f := range x {
			g.u32(math.Float32bits(f))
		}
	case []int32:
		g.u32(ggufArr)
		g.u32(ggufI32)
		g.u64(uint64(len(x)))
		for _, i := range x {
			g.u32(uint32(i))
		}
	default:
		return fmt.Errorf("checkpoints: GGUF value of type %T is not supported", v)
	}
	return nil
}

// WriteGGUF writes a GGUF v3 file atomically. Tensors are produced and
// encoded one at a time.
func WriteGGUF(path string, kvs []GGUFKV, tensors []GGUFTensor) error {
	type placed struct {
		t    GGUFTensor
		off  int64
		size int64
	}
	var ps []placed
	var off int64
	for _, t := range tensors {
		n := backend.Numel(t.Shape)
		if t.Type == GGMLQ8_0 && len(t.Shape) > 0 && t.Shape[len(t.Shape)-1]%q8Block != 0 {
			return fmt.Errorf("checkpoints: tensor %s: rows of %d values cannot be stored as q8_0 (blocks of %d); export as f16 or bf16",
				t.Name, t.Shape[len(t.Shape)-1], q8Block)
		}
		size, err := GGUFTypeSize(t.Type, n)
		if err != nil {
			return fmt.Errorf("checkpoints: tensor %s: %w", t.Name, err)
		}
		ps = append(ps, placed{t, off, size})
		off += (size + GGUFAlignment - 1) / GGUFAlignment * GGUFAlignment
	}
	return diskio.WriteAtomic(path, func(w io.Writer) error {
		g := &ggufWriter{w: bufio.NewWriterSize(w, 1<<20)}
		g.u32(ggufMagic)
		g.u32(3)
		g.u64(uint64(len(tensors)))
		g.u64(uint64(len(kvs)))
		for _, kv := range kvs {
			g.str(kv.Key)
			if err := g.value(kv.Value); err != nil {
				return err
			}
		}
		for _, p := range ps {
			g.str(p.t.Name)
			g.u32(uint32(len(p.t.Shape)))
			for i := len(p.t.Shape) - 1; i >= 0; i-- { // GGML lists the innermost dimension first
				g.u64(uint64(p.t.Shape[i]))
			}
			g.u32(p.t.Type)
			g.u64(uint64(p.off))
		}
		pad := func() {
			if r := g.n % GGUFAlignment; r != 0 {
				g.write(make([]byte, GGUFAlignment-r))
			}
		}
		pad()
		for _, p := range ps {
			v, err := p.t.Data()
			if err != nil {
				return fmt.Errorf("checkpoints: tensor %s: %w", p.t.Name, err)
			}
			if len(v) != backend.Numel(p.t.Shape) {
				return fmt.Errorf("checkpoints: tensor %s: %d values for shape %v", p.t.Name, len(v), p.t.Shape)
			}
			b, err := EncodeGGML(p.t.Type, v)
			if err != nil {
				return fmt.Errorf("checkpoints: tensor %s: %w", p.t.Name, err)
			}
			g.write(b)
			pad()
		}
		if g.err != nil {
			return g.err
		}
		return g.w.Flush()
	})
}

// GGUFFile is a parsed GGUF file.
type GGUFFile struct {
	Version uint32
	KV      map[string]GGUFValue
	Keys    []string // in file order
	Tensors []GGUFTensorInfo
	data    []byte
}

// GGUFTensorInfo describes a stored tensor.
type GGUFTensorInfo struct {
	Name   string
	Shape  []int // row-major, outermost first
	Type   uint32
	Offset int64
}

type ggufReader struct {
	b   []byte
	pos int
	err error
}

func (r *ggufReader) take(n int) []byte {
	if r.err != nil || n < 0 || r.pos+n > len(r.b) {
		if r.err == nil {
			r.err = fmt.Errorf("truncated at byte %d", r.pos)
		}
		return make([]byte, max(n, 0))
	}
	s := r.b[r.pos : r.pos+n]
	r.pos += n
	return s
}
func (r *ggufReader) u32() uint32 { return binary.LittleEndian.Uint32(r.take(4)) }
func (r *ggufReader) u64() uint64 { return binary.LittleEndian.Uint64(r.take(8)) }
func (r *ggufReader) str() string {
	n := r.u64()
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("string of %d bytes at byte %d", n, r.pos)
		return ""
	}
	return string(r.take(int(n)))
}

func (r *ggufReader) value(t uint32) GGUFValue {
	switch t {
	case ggufU8, ggufI8, ggufBool:
		v := r.take(1)[0]
		if t == ggufBool {
			return v != 0
		}
		return uint32(v)
	case ggufU16, ggufI16:
		return uint32(binary.LittleEndian.Uint16(r.take(2)))
	case ggufU32:
		return r.u32()
	case ggufI32:
		return int32(r.u32())
	case ggufF32:
		return math.Float32frombits(r.u32())
	case ggufU64:
		return r.u64()
	case ggufI64:
		return int64(r.u64())
	case ggufF64:
		return math.Float64frombits(r.u64())
	case ggufStr:
		return r.str()
	case ggufArr:
		et, n := r.u32(), r.u64()
		if n > uint64(len(r.b)) {
			r.err = fmt.Errorf("array of %d values at byte %d", n, r.pos)
			return nil
		}
		switch et {
		case ggufStr:
			out := make([]string, n)
			for i := range out {
				out[i] = r.str()
			}
			return out
		case ggufF32:
			out := make([]float32, n)
			for i := range out {
				out[i] = math.Float32frombits(r.u32())
			}
			return out
		case ggufI32:
			out := make([]int32, n)
			for i := range out {
				out[i] = int32(r.u32())
			}
			return out
		}
		out := make([]GGUFValue, n)
		for i := range out {
			out[i] = r.value(et)
		}
		return out
	}
	r.err = fmt.Errorf("unknown metadata type %d", t)
	return nil
}

// ReadGGUF parses a whole GGUF file (for tests and inspection).
func ReadGGUF(path string) (*GGUFFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	r := &ggufReader{b: b}
	if r.u32() != ggufMagic {
		return nil, fmt.Errorf("checkpoints: %s is not a GGUF file", path)
	}
	f := &GGUFFile{Version: r.u32(), KV: map[string]GGUFValue{}}
	nt, nkv := r.u64(), r.u64()
	if nt > 1<<24 || nkv > 1<<24 {
		return nil, fmt.Errorf("checkpoints: %s: implausible counts (%d tensors, %d keys)", path, nt, nkv)
	}
	for range nkv {
		k := r.str()
		f.KV[k] = r.value(r.u32())
		f.Keys = append(f.Keys, k)
	}
	for range nt {
		ti := GGUFTensorInfo{Name: r.str()}
		nd := r.u32()
		if nd > 8 {
			return nil, fmt.Errorf("checkpoints: %s: tensor %s has %d dimensions", path, ti.Name, nd)
		}
		dims := make([]int, nd)
		for i := range dims {
			dims[i] = int(r.u64())
		}
		for i := len(dims) - 1; i >= 0; i-- {
			ti.Shape = append(ti.Shape, dims[i])
		}
		ti.Type, ti.Offset = r.u32(), int64(r.u64())
		f.Tensors = append(f.Tensors, ti)
	}
	if r.err != nil {
		return nil, fmt.Errorf("checkpoints: %s: %w", path, r.err)
	}
	align := int64(GGUFAlignment)
	if a, ok := f.KV["general.alignment"].(uint32); ok && a > 0 {
		align = int64(a)
	}
	start := (int64(r.pos) + align - 1) / align * align
	if start > int64(len(b)) {
		return nil, fmt.Errorf("checkpoints: %s: no tensor data", path)
	}
	f.data = b[start:]
	sort.SliceStable(f.Tensors, func(i, j int) bool { return f.Tensors[i].Offset < f.Tensors[j].Offset })
	return f, nil
}

// Tensor decodes a stored tensor to float32.
func (f *GGUFFile) Tensor(name string) ([]float32, *GGUFTensorInfo, error) {
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if t.Name != name {
			continue
		}
		n := backend.Numel(t.Shape)
		size, err := GGUFTypeSize(t.Type, n)
		if err != nil {
			return nil, nil, err
		}
		if t.Offset < 0 || t.Offset+size > int64(len(f.data)) {
			return nil, nil, fmt.Errorf("checkpoints: GGUF tensor %s runs past the end of the file", name)
		}
		v, err := DecodeGGML(t.Type, f.data[t.Offset:t.Offset+size], n)
		return v, t, err
	}
	return nil, nil, fmt.Errorf("checkpoints: no GGUF tensor %q", name)
}
