package checkpoints

import (
	"archive/zip"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/minitron/minitron/backend"
)

// PyTorch checkpoints (torch.save since 1.6) are zip archives holding
// data.pkl, a pickle of the state dict in which every tensor is rebuilt
// from a storage stored as its own zip entry (data/<key>). This reader runs
// a minimal pickle machine that understands only tensor rebuilding: any
// other callable is refused, so loading never executes code.

// TorchTensor is a tensor described by a PyTorch checkpoint.
type TorchTensor struct {
	Name   string
	DType  backend.DType
	Shape  []int
	offset int64 // elements into the storage
	key    string
	zipf   *zip.File
	file   string
}

// Size is the tensor's byte size.
func (t *TorchTensor) Size() int64 { return int64(backend.Numel(t.Shape)) * int64(t.DType.Size()) }

// storageTypes maps PyTorch storage classes to dtypes.
var storageTypes = map[string]backend.DType{
	"FloatStorage": backend.F32, "HalfStorage": backend.F16, "BFloat16Storage": backend.BF16,
	"DoubleStorage": backend.F64, "LongStorage": backend.I64, "IntStorage": backend.I32,
}

type pglobal struct{ module, name string }
type pstorage struct {
	dtype backend.DType
	key   string
	numel int64
}
type ptensor struct {
	st     pstorage
	offset int64
	size   []int
	stride []int
}
type pmark struct{}
type pdict struct {
	keys []any
	vals map[any]any
}

// allowedGlobal says whether a pickle may reference a name.
func allowedGlobal(module, name string) bool {
	switch module + "." + name {
	case "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
		return true
	}
	if module == "torch" {
		_, ok := storageTypes[name]
		return ok
	}
	return false
}

// unpickle runs the restricted pickle machine over data.pkl.
func unpickle(b []byte, where string) (any, error) {
	var stack []any
	memo := map[int]any{}
	pos := 0
	fail := func(f string, a ...any) error {
		return fmt.Errorf("checkpoints: %s: %s (at byte %d of data.pkl)", where, fmt.Sprintf(f, a...), pos)
	}
	need := func(n int) ([]byte, error) {
		if pos+n > len(b) {
			return nil, fail("truncated pickle")
		}
		s := b[pos : pos+n]
		pos += n
		return s, nil
	}
	pop := func() (any, error) {
		if len(stack) == 0 {
			return nil, fail("pickle stack underflow")
		}
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		return v, nil
	}
	popMark := func() ([]any, error) {
		for i := len(stack) - 1; i >= 0; i-- {
			if _, ok := stack[i].(pmark); ok {
				items := append([]any(nil), stack[i+1:]...)
				stack = stack[:i]
				return items, nil
			}
		}
		return nil, fail("pickle MARK missing")
	}
	readLine := func() (string, error) {
		i := strings.IndexByte(string(b[pos:]), '\n')
		if i < 0 {
			return "", fail("truncated pickle")
		}
		s := string(b[pos : pos+i])
		pos += i + 1
		return s, nil
	}
	global := func(module, name string) error {
		if !allowedGlobal(module, name) {
			return fail("the pickle references %s.%s; only tensor rebuilding is allowed, so this file is refused (it could run code when loaded by PyTorch)", module, name)
		}
		stack = append(stack, pglobal{module, name})
		return nil
	}
	for {
		if pos >= len(b) {
			return nil, fail("pickle ended without STOP")
		}
		op := b[pos]
		pos++
		switch op {
		case 0x80: // PROTO
			if _, err := need(1); err != nil {
				return nil, err
			}
		case 0x95: // FRAME
			if _, err := need(8); err != nil {
				return nil, err
			}
		case 'c': // GLOBAL
			m, err := readLine()
			if err != nil {
				return nil, err
			}
			n, err := readLine()
			if err != nil {
				return nil, err
			}
			if err := global(m, n); err != nil {
				return nil, err
			}
		case 0x93: // STACK_GLOBAL
			n, err := pop()
			if err != nil {
				return nil, err
			}
			m, err := pop()
			if err != nil {
				return nil, err
			}
			ms, ok1 := m.(string)
			ns, ok2 := n.(string)
			if !ok1 || !ok2 {
				return nil, fail("STACK_GLOBAL of non-strings")
			}
			if err := global(ms, ns); err != nil {
				return nil, err
			}
		case 'q', 'r', 0x94: // BINPUT, LONG_BINPUT, MEMOIZE
			if len(stack) == 0 {
				return nil, fail("memo of an empty stack")
			}
			var k int
			switch op {
			case 'q':
				s, err := need(1)
				if err != nil {
					return nil, err
				}
				k = int(s[0])
			case 'r':
				s, err := need(4)
				if err != nil {
					return nil, err
				}
				k = int(binary.LittleEndian.Uint32(s))
			default:
				k = len(memo)
			}
			memo[k] = stack[len(stack)-1]
		case 'h', 'j': // BINGET, LONG_BINGET
			var k int
			if op == 'h' {
				s, err := need(1)
				if err != nil {
					return nil, err
				}
				k = int(s[0])
			} else {
				s, err := need(4)
				if err != nil {
					return nil, err
				}
				k = int(binary.LittleEndian.Uint32(s))
			}
			v, ok := memo[k]
			if !ok {
				return nil, fail("memo %d unset", k)
			}
			stack = append(stack, v)
		case '(':
			stack = append(stack, pmark{})
		case 't':
			items, err := popMark()
			if err != nil {
				return nil, err
			}
			stack = append(stack, items)
		case 0x85, 0x86, 0x87: // TUPLE1..3
			n := int(op - 0x84)
			if len(stack) < n {
				return nil, fail("pickle stack underflow")
			}
			t := append([]any(nil), stack[len(stack)-n:]...)
			stack = append(stack[:len(stack)-n], t)
		case ')':
			stack = append(stack, []any{})
		case '}':
			stack = append(stack, &pdict{vals: map[any]any{}})
		case ']':
			stack = append(stack, &[]any{})
		case 's', 'u': // SETITEM, SETITEMS
			var kv []any
			if op == 's' {
				v, err := pop()
				if err != nil {
					return nil, err
				}
				k, err := pop()
				if err != nil {
					return nil, err
				}
				kv = []any{k, v}
			} else {
				var err error
				if kv, err = popMark(); err != nil {
					return nil, err
				}
			}
			if len(stack) == 0 {
				return nil, fail("SETITEM without a dict")
			}
			d, ok := stack[len(stack)-1].(*pdict)
			if !ok || len(kv)%2 != 0 {
				return nil, fail("SETITEM on %T", stack[len(stack)-1])
			}
			for i := 0; i < len(kv); i += 2 {
				k := kv[i]
				if _, hashable := k.(string); !hashable {
					if _, isInt := k.(int64); !isInt {
						return nil, fail("dict key of type %T", k)
					}
				}
				if _, dup := d.vals[k]; !dup {
					d.keys = append(d.keys, k)
				}
				d.vals[k] = kv[i+1]
			}
		case 'a', 'e': // APPEND, APPENDS
			var items []any
			if op == 'a' {
				v, err := pop()
				if err != nil {
					return nil, err
				}
				items = []any{v}
			} else {
				var err error
				if items, err = popMark(); err != nil {
					return nil, err
				}
			}
			if len(stack) == 0 {
				return nil, fail("APPEND without a list")
			}
			l, ok := stack[len(stack)-1].(*[]any)
			if !ok {
				return nil, fail("APPEND on %T", stack[len(stack)-1])
			}
			*l = append(*l, items...)
		case 'J', 'K', 'M': // BININT, BININT1, BININT2
			n := map[byte]int{'J': 4, 'K': 1, 'M': 2}[op]
			s, err := need(n)
			if err != nil {
				return nil, err
			}
			var v int64
			switch n {
			case 1:
				v = int64(s[0])
			case 2:
				v = int64(binary.LittleEndian.Uint16(s))
			default:
				v = int64(int32(binary.LittleEndian.Uint32(s)))
			}
			stack = append(stack, v)
		case 0x8a: // LONG1
			s, err := need(1)
			if err != nil {
				return nil, err
			}
			d, err := need(int(s[0]))
			if err != nil {
				return nil, err
			}
			if len(d) > 8 {
				return nil, fail("integer of %d bytes", len(d))
			}
			var v int64
			for i := len(d) - 1; i >= 0; i-- {
				v = v<<8 | int64(d[i])
			}
			if len(d) > 0 && len(d) < 8 && d[len(d)-1]&0x80 != 0 {
				v -= 1 << (8 * len(d))
			}
			stack = append(stack, v)
		case 'G': // BINFLOAT (big-endian)
			s, err := need(8)
			if err != nil {
				return nil, err
			}
			stack = append(stack, math.Float64frombits(binary.BigEndian.Uint64(s)))
		case 'X', 0x8c, 0x8d, 'T', 'U', 'B', 'C': // unicode and byte strings
			var n int
			switch op {
			case 'X', 'T', 'B':
				s, err := need(4)
				if err != nil {
					return nil, err
				}
				n = int(binary.LittleEndian.Uint32(s))
			case 0x8d:
				s, err := need(8)
				if err != nil {
					return nil, err
				}
				n = int(binary.LittleEndian.Uint64(s))
			default:
				s, err := need(1)
				if err != nil {
					return nil, err
				}
				n = int(s[0])
			}
			if n < 0 || n > len(b) {
				return nil, fail("string of %d bytes", n)
			}
			s, err := need(n)
			if err != nil {
				return nil, err
			}
			stack = append(stack, string(s))
		case 0x88, 0x89: // NEWTRUE, NEWFALSE
			stack = append(stack, op == 0x88)
		case 'N':
			stack = append(stack, nil)
		case 'Q': // BINPERSID
			v, err := pop()
			if err != nil {
				return nil, err
			}
			t, ok := v.([]any)
			if !ok || len(t) < 5 || t[0] != "storage" {
				return nil, fail("persistent id %v is not a storage", v)
			}
			g, ok1 := t[1].(pglobal)
			key, ok2 := t[2].(string)
			numel, ok3 := t[4].(int64)
			dt, known := storageTypes[g.name]
			if !ok1 || !ok2 || !ok3 || !known {
				return nil, fail("storage %v has an unsupported type", t)
			}
			stack = append(stack, pstorage{dtype: dt, key: key, numel: numel})
		case 'R': // REDUCE
			args, err := pop()
			if err != nil {
				return nil, err
			}
			fn, err := pop()
			if err != nil {
				return nil, err
			}
			g, ok := fn.(pglobal)
			a, ok2 := args.([]any)
			if !ok || !ok2 {
				return nil, fail("REDUCE of %T", fn)
			}
			r, err := reduce(g, a)
			if err != nil {
				return nil, fail("%v", err)
			}
			stack = append(stack, r)
		case 'b': // BUILD: only an OrderedDict's empty state is expected
			if _, err := pop(); err != nil {
				return nil, err
			}
		case '.': // STOP
			return pop()
		default:
			return nil, fail("unsupported pickle opcode 0x%02x", op)
		}
	}
}

func reduce(g pglobal, a []any) (any, error) {
	switch g.module + "." + g.name {
	case "collections.OrderedDict":
		return &pdict{vals: map[any]any{}}, nil
	case "torch._utils._rebuild_tensor_v2":
		if len(a) < 4 {
			return nil, fmt.Errorf("_rebuild_tensor_v2 with %d arguments", len(a))
		}
		st, ok := a[0].(pstorage)
		off, ok2 := a[1].(int64)
		size, ok3 := ints(a[2])
		stride, ok4 := ints(a[3])
		if !ok || !ok2 || !ok3 || !ok4 {
			return nil, fmt.Errorf("malformed _rebuild_tensor_v2 arguments")
		}
		return ptensor{st: st, offset: off, size: size, stride: stride}, nil
	case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
		if len(a) < 1 {
			return nil, fmt.Errorf("_rebuild_parameter without a tensor")
		}
		t, ok := a[0].(ptensor)
		if !ok {
			return nil, fmt.Errorf("_rebuild_parameter of %T", a[0])
		}
		return t, nil
	}
	return nil, fmt.Errorf("calling %s.%s is not allowed", g.module, g.name)
}

func ints(v any) ([]int, bool) {
	t, ok := v.([]any)
	if !ok {
		return nil, false
	}
	out := make([]int, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok || n < 0 {
			return nil, false
		}
		out[i] = int(n)
	}
	return out, true
}

// TorchFile is an opened PyTorch zip checkpoint.
type TorchFile struct {
	Path    string
	Tensors []*TorchTensor
	zr      *zip.ReadCloser
}

// OpenTorch reads the tensor descriptions of a PyTorch zip checkpoint.
func OpenTorch(path string) (*TorchFile, error) {
	zr, err := zip.OpenReader(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoints: %s is not a PyTorch zip checkpoint (%w); files saved before PyTorch 1.6 must be re-saved with torch.save", path, err)
	}
	fail := func(err error) (*TorchFile, error) { zr.Close(); return nil, err }
	var pkl *zip.File
	entries := map[string]*zip.File{}
	prefix := ""
	for _, f := range zr.File {
		if strings.HasSuffix(f.Name, "/data.pkl") && pkl == nil {
			pkl, prefix = f, strings.TrimSuffix(f.Name, "data.pkl")
		}
		entries[f.Name] = f
	}
	if pkl == nil {
		return fail(fmt.Errorf("checkpoints: %s: no data.pkl; not a PyTorch checkpoint", path))
	}
	r, err := pkl.Open()
	if err != nil {
		return fail(fmt.Errorf("checkpoints: %s: %w", path, err))
	}
	b, err := io.ReadAll(io.LimitReader(r, 1<<30))
	r.Close()
	if err != nil {
		return fail(fmt.Errorf("checkpoints: %s: reading data.pkl: %w", path, err))
	}
	root, err := unpickle(b, path)
	if err != nil {
		return fail(err)
	}
	d, ok := root.(*pdict)
	if !ok {
		return fail(fmt.Errorf("checkpoints: %s: the pickle holds a %T, not a state dict", path, root))
	}
	tf := &TorchFile{Path: path, zr: zr}
	for _, k := range d.keys {
		name, ok := k.(string)
		t, ok2 := d.vals[k].(ptensor)
		if !ok || !ok2 {
			continue // non-tensor entries (e.g. metadata) are skipped
		}
		// Only contiguous row-major tensors can be streamed as they are.
		want := 1
		for i := len(t.size) - 1; i >= 0; i-- {
			if t.size[i] != 1 && t.stride[i] != want {
				return fail(fmt.Errorf("checkpoints: %s: tensor %q is not contiguous (size %v, stride %v); save it with .contiguous()", path, name, t.size, t.stride))
			}
			want *= t.size[i]
		}
		zf, ok := entries[prefix+"data/"+t.st.key]
		if !ok {
			return fail(fmt.Errorf("checkpoints: %s: storage %s of tensor %q is missing", path, t.st.key, name))
		}
		es := int64(t.st.dtype.Size())
		if n := int64(backend.Numel(t.size)); t.offset+n > t.st.numel || int64(zf.UncompressedSize64) < t.st.numel*es {
			return fail(fmt.Errorf("checkpoints: %s: tensor %q reaches past its storage (corrupt file)", path, name))
		}
		tf.Tensors = append(tf.Tensors, &TorchTensor{Name: name, DType: t.st.dtype, Shape: t.size, offset: t.offset, key: t.st.key, zipf: zf, file: path})
	}
	return tf, nil
}

// Close closes the archive.
func (f *TorchFile) Close() error { return f.zr.Close() }

// Stream copies the tensor's bytes from the archive to w.
func (t *TorchTensor) Stream(w io.Writer) error {
	r, err := t.zipf.Open()
	if err != nil {
		return fmt.Errorf("checkpoints: %s: %w", t.file, err)
	}
	defer r.Close()
	es := int64(t.DType.Size())
	if _, err := io.CopyN(io.Discard, r, t.offset*es); err != nil {
		return fmt.Errorf("checkpoints: %s: storage %s: %w", t.file, t.key, err)
	}
	if _, err := io.CopyN(w, r, t.Size()); err != nil {
		return fmt.Errorf("checkpoints: %s: tensor %q: %w", t.file, t.Name, err)
	}
	return nil
}

// ConvertTorch converts a PyTorch checkpoint (a pytorch_model.bin file, or
// a directory with one or with pytorch_model.bin.index.json and its
// shards) into safetensors in dir (which must exist): tensors keep their
// dtype and are streamed one at a time from the archives. Returns the
// number of tensors written.
func ConvertTorch(src, dir string, maxShard int64) (int, error) {
	files := []string{src}
	if st, err := os.Stat(src); err == nil && st.IsDir() {
		idx := filepath.Join(src, "pytorch_model.bin.index.json")
		if b, err := os.ReadFile(idx); err == nil {
			var index struct {
				WeightMap map[string]string `json:"weight_map"`
			}
			if err := json.Unmarshal(b, &index); err != nil {
				return 0, fmt.Errorf("checkpoints: %s: invalid JSON: %w", idx, err)
			}
			seen := map[string]bool{}
			files = nil
			for _, f := range index.WeightMap {
				if strings.ContainsAny(f, `/\`) {
					return 0, fmt.Errorf("checkpoints: %s: shard %q must be in the same directory", idx, f)
				}
				if !seen[f] {
					seen[f] = true
					files = append(files, filepath.Join(src, f))
				}
			}
			sort.Strings(files)
		} else {
			files = []string{filepath.Join(src, "pytorch_model.bin")}
		}
	} else if err != nil {
		return 0, fmt.Errorf("checkpoints: %w", err)
	}
	var opened []*TorchFile
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	var entries []Entry
	names := map[string]bool{}
	for _, p := range files {
		tf, err := OpenTorch(p)
		if err != nil {
			return 0, err
		}
		opened = append(opened, tf)
		for _, t := range tf.Tensors {
			if names[t.Name] {
				return 0, fmt.Errorf("checkpoints: tensor %q appears in two shards", t.Name)
			}
			names[t.Name] = true
			entries = append(entries, Entry{Name: t.Name, DType: t.DType, Shape: t.Shape, Stream: t.Stream})
		}
	}
	if len(entries) == 0 {
		return 0, fmt.Errorf("checkpoints: %s holds no tensors", src)
	}
	_, err := WriteSharded(dir, entries, maxShard, map[string]string{"format": "pt"})
	return len(entries), err
}
