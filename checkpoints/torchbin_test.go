package checkpoints

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
)

const torchFixtures = "../testdata/torch"

// TestConvertTorch: checkpoints written by PyTorch's torch.save convert to
// safetensors with the same tensors, dtypes kept.
func TestConvertTorch(t *testing.T) {
	ref, err := Open(filepath.Join("../testdata/hf/nemotron-tiny", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	for _, c := range []struct {
		src string
		dt  backend.DType
	}{{filepath.Join(torchFixtures, "pytorch_model.bin"), backend.F32}, {filepath.Join(torchFixtures, "bf16"), backend.BF16}} {
		out := t.TempDir()
		n, err := ConvertTorch(c.src, out, 100000)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Open(out)
		if err != nil {
			t.Fatal(err)
		}
		if n != len(ref.Names()) || len(got.Names()) != n {
			t.Fatalf("%s: %d tensors, want %d", c.src, n, len(ref.Names()))
		}
		for _, name := range ref.Names() {
			info, _ := got.Info(name)
			if info == nil || info.DType != c.dt {
				t.Fatalf("%s: %s: %+v", c.src, name, info)
			}
			w, _ := ref.Float32(name)
			g, err := got.Float32(name)
			if err != nil {
				t.Fatal(err)
			}
			for i := range w {
				want := w[i]
				if c.dt == backend.BF16 {
					want = backend.BF16ToF32(backend.F32ToBF16(want))
				}
				if g[i] != want {
					t.Fatalf("%s: %s[%d] = %v, want %v", c.src, name, i, g[i], want)
				}
			}
		}
		got.Close()
	}
}

func TestTorchSharedStorage(t *testing.T) {
	out := t.TempDir()
	if _, err := ConvertTorch(filepath.Join(torchFixtures, "shared.bin"), out, 0); err != nil {
		t.Fatal(err)
	}
	ts, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	a, _ := ts.Float32("a")
	b, _ := ts.Float32("b")
	row, _ := ts.Float32("row")
	if len(a) != 24 || a[23] != 23 || b[5] != 5 || len(row) != 6 || row[0] != 6 || row[5] != 11 {
		t.Fatalf("a %v b %v row %v", a, b, row)
	}
}

func TestTorchRefusesCode(t *testing.T) {
	_, err := ConvertTorch(filepath.Join(torchFixtures, "evil.bin"), t.TempDir(), 0)
	if err == nil || !strings.Contains(err.Error(), "system") || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("malicious pickle: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "x.bin")
	b, _ := os.ReadFile(filepath.Join(torchFixtures, "pytorch_model.bin"))
	os.WriteFile(bad, b[:len(b)/3], 0o644)
	if _, err := ConvertTorch(bad, t.TempDir(), 0); err == nil || !strings.Contains(err.Error(), "x.bin") {
		t.Fatalf("truncated zip: %v", err)
	}
}

func FuzzUnpickle(f *testing.F) {
	for _, p := range []string{"pytorch_model.bin", "shared.bin", "evil.bin"} {
		tf, err := OpenTorch(filepath.Join(torchFixtures, p))
		if err == nil {
			r, _ := tf.zr.File[0].Open()
			b := make([]byte, tf.zr.File[0].UncompressedSize64)
			r.Read(b)
			f.Add(b)
			tf.Close()
		}
	}
	f.Add([]byte("\x80\x02}q\x00."))
	f.Fuzz(func(t *testing.T, b []byte) {
		unpickle(b, "fuzz") // must not panic
	})
}
