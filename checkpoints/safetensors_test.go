package checkpoints

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
)

const fixtures = "../testdata/hf"

func TestReadFixture(t *testing.T) {
	f32, err := Open(filepath.Join(fixtures, "nemotron-tiny"))
	if err != nil {
		t.Fatal(err)
	}
	defer f32.Close()
	bf, err := Open(filepath.Join(fixtures, "nemotron-tiny-bf16", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	if got := len(f32.Names()); got != 24 {
		t.Fatalf("%d tensors, want 24", got)
	}
	info, _ := f32.Info("model.layers.0.self_attn.k_proj.weight")
	if info.DType != backend.F32 || info.Shape[0] != 32 || info.Shape[1] != 64 {
		t.Fatalf("k_proj: %v %v", info.DType, info.Shape)
	}
	// The bf16 fixture was rounded by PyTorch (round to nearest even): our
	// rounding of the float32 weights must give the same bits.
	for _, name := range f32.Names() {
		w, err := f32.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := bf.Bytes(name)
		if err != nil {
			t.Fatal(err)
		}
		for i, x := range w {
			if got, want := backend.F32ToBF16(x), binary.LittleEndian.Uint16(raw[2*i:]); got != want {
				t.Fatalf("%s[%d]: bf16 %#04x, PyTorch %#04x", name, i, got, want)
			}
		}
		wb, err := bf.Float32(name, info.Shape...)
		if name == "model.layers.0.self_attn.k_proj.weight" && (err != nil || len(wb) != 32*64) {
			t.Fatalf("bf16 read: %v", err)
		}
	}
	if _, err := f32.Float32("model.norm.weight", 65); err == nil || !strings.Contains(err.Error(), "model.norm.weight") {
		t.Fatalf("wrong shape not reported with the tensor name: %v", err)
	}
	if _, err := f32.Float32("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("missing tensor: %v", err)
	}
}

func TestRoundTripSharded(t *testing.T) {
	dir := t.TempDir()
	vals := []float32{1, -2.5, 3.25, 0, 1e-3, 65504, -1e-8}
	var entries []Entry
	for _, dt := range []backend.DType{backend.F32, backend.BF16, backend.F16, backend.F64} {
		entries = append(entries, FloatEntry("w."+dt.String(), dt, []int{7}, vals))
	}
	entries = append(entries, Int64Entry("ids", []int{2, 2}, []int64{1, -2, 1 << 40, 4}))
	names, err := WriteSharded(dir, entries, 40, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 3 || names[len(names)-1] != IndexFile {
		t.Fatalf("files %v: want several shards and the index", names)
	}
	ts, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	for _, dt := range []backend.DType{backend.F32, backend.BF16, backend.F16, backend.F64} {
		got, err := ts.Float32("w." + dt.String())
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			want := v
			switch dt {
			case backend.BF16:
				want = backend.BF16ToF32(backend.F32ToBF16(v))
			case backend.F16:
				want = backend.F16ToF32(backend.F32ToF16(v))
			}
			if got[i] != want {
				t.Errorf("%v[%d] = %v, want %v", dt, i, got[i], want)
			}
		}
	}
	ids, shape, err := ts.Int64("ids")
	if err != nil || ids[2] != 1<<40 || ids[1] != -2 || shape[0] != 2 {
		t.Fatalf("ids %v %v %v", ids, shape, err)
	}
	if ts.Files()[0].Metadata["format"] != "pt" {
		t.Fatal("metadata lost")
	}
	// Everything fits in one file: no index, model.safetensors.
	dir2 := t.TempDir()
	names, err = WriteSharded(dir2, entries, 1<<30, nil)
	if err != nil || len(names) != 1 || names[0] != "model.safetensors" {
		t.Fatalf("%v %v", names, err)
	}
	// No temporary files are left behind.
	left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	if len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// rawFile builds a safetensors file from a header string and data length.
func rawFile(t *testing.T, hdr string, data int) string {
	t.Helper()
	b := make([]byte, 8, 8+len(hdr)+data)
	binary.LittleEndian.PutUint64(b, uint64(len(hdr)))
	b = append(b, hdr...)
	b = append(b, make([]byte, data)...)
	p := filepath.Join(t.TempDir(), "bad.safetensors")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadFiles(t *testing.T) {
	cases := []struct {
		name, hdr string
		data      int
		want      string
	}{
		{"invalid json", `{"a": `, 0, "invalid JSON"},
		{"unknown dtype", `{"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}`, 1, `"w" has dtype "Q4"`},
		{"offsets past end", `{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, 8, "outside"},
		{"size mismatch", `{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8, "want 12"},
		{"overlap", `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12, "overlap"},
		{"negative dim", `{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}`, 0, "invalid dimension"},
		{"bad offsets", `{"w":{"dtype":"F32","shape":[1],"data_offsets":[4]}}`, 4, "data_offsets"},
		{"bad metadata", `{"__metadata__":{"a":1}}`, 0, "__metadata__"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := rawFile(t, c.hdr, c.data)
			_, err := OpenFile(p)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("error %v: want one naming the file and saying %q", err, c.want)
			}
		})
	}
	t.Run("truncated", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "short.safetensors")
		os.WriteFile(p, []byte{1, 2, 3}, 0o644)
		if _, err := OpenFile(p); err == nil || !strings.Contains(err.Error(), "too short") {
			t.Fatal(err)
		}
	})
	t.Run("truncated data", func(t *testing.T) {
		// Tensors w1..w9 of 400 bytes each; the file is cut inside w4:
		// every open names w4, the first tensor that does not fit.
		var es []Entry
		for i := 1; i <= 9; i++ {
			es = append(es, FloatEntry(fmt.Sprintf("w%d", i), backend.F32, []int{100}, make([]float32, 100)))
		}
		full := filepath.Join(t.TempDir(), "full.safetensors")
		if err := WriteFile(full, es, nil); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(full)
		p := filepath.Join(t.TempDir(), "cut.safetensors")
		os.WriteFile(p, b[:len(b)-5*400-200], 0o644)
		for range 20 {
			if _, err := OpenFile(p); err == nil || !strings.Contains(err.Error(), `tensor "w4": data offsets [1200, 1600]`) {
				t.Fatalf("error %v, want one naming w4", err)
			}
		}
	})
	t.Run("header past end", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "h.safetensors")
		b := make([]byte, 16)
		binary.LittleEndian.PutUint64(b, 1000)
		os.WriteFile(p, b, 0o644)
		if _, err := OpenFile(p); err == nil || !strings.Contains(err.Error(), "past the end") {
			t.Fatal(err)
		}
	})
	t.Run("index names a missing tensor", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := WriteSharded(dir, []Entry{FloatEntry("a", backend.F32, []int{1}, []float32{1}), FloatEntry("b", backend.F32, []int{1}, []float32{1})}, 4, nil); err != nil {
			t.Fatal(err)
		}
		idx, _ := json.Marshal(map[string]any{"weight_map": map[string]string{"a": "model-00001-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}})
		os.WriteFile(filepath.Join(dir, IndexFile), idx, 0o644)
		if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), `"c"`) {
			t.Fatal(err)
		}
	})
	t.Run("pytorch checkpoint", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "pytorch_model.bin"), []byte("x"), 0o644)
		if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "minitron convert") {
			t.Fatal(err)
		}
	})
}

// TestOpenIsLazy opens a 4 GB (sparse) checkpoint: only the header may be read.
func TestOpenIsLazy(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.safetensors")
	const n = 1 << 30
	hdr := `{"w":{"dtype":"F32","shape":[1073741824],"data_offsets":[0,4294967296]}}`
	for len(hdr)%8 != 0 {
		hdr += " "
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, uint64(len(hdr)))
	f.Write(b)
	f.Write([]byte(hdr))
	if err := f.Truncate(int64(8 + len(hdr) + 4*n)); err != nil {
		t.Skip("no sparse files here:", err)
	}
	f.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ts, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	runtime.ReadMemStats(&after)
	if grew := int64(after.TotalAlloc - before.TotalAlloc); grew > 1<<20 {
		t.Fatalf("opening allocated %d bytes", grew)
	}
	raw, err := ts.Bytes("w")
	if err != nil || len(raw) != 4*n {
		t.Fatalf("%d bytes, %v", len(raw), err)
	}
}

func FuzzParseHeader(f *testing.F) {
	seed := func(hdr string, data int) []byte {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint64(b, uint64(len(hdr)))
		return append(append(b, hdr...), make([]byte, data)...)
	}
	f.Add(seed(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8))
	f.Add(seed(`{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[2,1],"data_offsets":[0,4]},"b":{"dtype":"I64","shape":[],"data_offsets":[4,12]}}`, 12))
	f.Add(seed(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8))
	f.Add(seed(`{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[4],"data_offsets":[2,10]}}`, 10))
	f.Add(seed(`{"w":{"dtype":"F32","shape":[9223372036854775807,4],"data_offsets":[0,8]}}`, 8))
	f.Add([]byte{255, 255, 255, 255, 255, 255, 255, 255})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseHeader("fuzz", b, int64(len(b)))
		if err != nil {
			return
		}
		var prevEnd int64
		for _, i := range h.Tensors {
			if i.Begin < prevEnd || i.End > int64(len(b)) || i.End-i.Begin != int64(i.Numel()*i.DType.Size()) {
				t.Fatalf("accepted bad tensor %+v", i)
			}
			prevEnd = i.End
		}
	})
}
