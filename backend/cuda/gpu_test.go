package cuda_test

import (
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/backendtest"
	"github.com/minitron/minitron/backend/cuda"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/model"
)

var (
	gpuOnce sync.Once
	gpu     *cuda.Backend
	gpuErr  error
)

// device opens the GPU once for all tests, or skips the test on a machine
// without one (the CPU-side logic is tested by the fake-device tests)
// unless MINITRON_REQUIRE_GPU=1 (bench/gpu.sh sets it, and the stand-in
// tests in emu_test.go): then a missing GPU or library fails the test.
func device(t *testing.T) *cuda.Backend {
	t.Helper()
	gpuOnce.Do(func() {
		if gpuErr = cuda.Available(); gpuErr == nil {
			gpu, gpuErr = cuda.Open(cuda.Options{Log: func(s string) { t.Log(s) }})
		}
	})
	if gpuErr != nil {
		if os.Getenv("MINITRON_REQUIRE_GPU") == "1" {
			t.Fatalf("MINITRON_REQUIRE_GPU=1 but no usable GPU: %v", gpuErr)
		}
		t.Skipf("no usable GPU: %v", gpuErr)
	}
	return gpu
}

// TestGPUDevices: every visible GPU opens, with the kernels compiled (or
// cached) for it and loaded, and closes again.
func TestGPUDevices(t *testing.T) {
	device(t)
	r := cuda.Probe(true, "", func(s string) { t.Log(s) })
	for _, l := range []cuda.Library{r.Driver, r.NVRTC, r.CuBLAS} {
		if l.Error != "" {
			t.Errorf("%s: %s", l.What, l.Error)
		}
		t.Logf("%s: %s (CUDA %s)", l.What, l.Path, l.Version)
	}
	if len(r.GPUs) == 0 {
		t.Fatalf("no GPU listed (%s)", r.GPUsErr)
	}
	for _, g := range r.GPUs {
		if g.Kernels != "ok" {
			t.Errorf("GPU %d (%s): kernels: %s", g.Ordinal, g.Name, g.Kernels)
		}
		t.Logf("GPU %d: %s, %s, %d bytes, driver %s", g.Ordinal, g.Name, g.Arch, g.Memory, r.DriverRelease)
	}
}

// TestGPUConformance runs the whole conformance suite on the GPU with
// bfloat16 tolerances.
func TestGPUConformance(t *testing.T) {
	b := device(t)
	t.Logf("%s", b.Name())
	backendtest.Run(t, func(t *testing.T) backend.Backend { return b }, backendtest.BF16)
}

// TestGPUFixtureParity compares logits, loss and every gradient of the
// fixture models, computed in bfloat16 on the GPU, with transformers'
// float64 goldens. Weights and every activation are rounded to bf16
// (8 significant bits, 2⁻⁹ relative), and a few layers compound it:
// 3e-2 on logits and 8e-2 on gradients (which go through twice the
// roundings) catch any real error, whose size is O(1).
func TestGPUFixtureParity(t *testing.T) {
	b := device(t)
	for _, name := range []string{"nemotron-tiny", "nemotron-odd", "llama-tiny"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("..", "..", "testdata", "hf", name)
			m, err := model.Load(dir, b, nil)
			if err != nil {
				t.Fatal(err)
			}
			g, err := checkpoints.Open(filepath.Join(dir, "golden.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			ids64, shape, err := g.Int64("input_ids")
			if err != nil {
				t.Fatal(err)
			}
			ids := make([]int32, len(ids64))
			for i, v := range ids64 {
				ids[i] = int32(v)
			}
			in := model.Input{B: shape[0], T: shape[1], IDs: ids}
			a, err := m.NewActivations(len(ids), true)
			if err != nil {
				t.Fatal(err)
			}
			logits, err := m.Forward(a, in, model.Options{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.ToFloat32(logits)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := g.Float32("logits")
			if e := backendtest.RelErr(got, want); e > 3e-2 {
				t.Errorf("logits: relative error %.3g", e)
			} else {
				t.Logf("logits: relative error %.3g", e)
			}
			grads, err := m.NewGrads()
			if err != nil {
				t.Fatal(err)
			}
			loss, err := m.LossAndGrad(a, in, model.NextTokenTargets(ids, shape[0], shape[1]), 1, grads)
			if err != nil {
				t.Fatal(err)
			}
			wl, _ := g.Float32("loss")
			if math.Abs(loss-float64(wl[0])) > 1e-2*math.Abs(float64(wl[0])) {
				t.Errorf("loss %v, want %v", loss, wl[0])
			}
			worst := 0.0
			for i, p := range m.Params {
				gv, err := b.ToFloat32(grads.T[i])
				if err != nil {
					t.Fatal(err)
				}
				wg, _ := g.Float32("grad." + p.Name)
				e := backendtest.RelErr(gv, wg)
				worst = max(worst, e)
				if e > 8e-2 {
					t.Errorf("grad.%s: relative error %.3g", p.Name, e)
				}
			}
			t.Logf("loss %.5f (golden %.5f), worst gradient relative error %.3g", loss, wl[0], worst)
		})
	}
}
