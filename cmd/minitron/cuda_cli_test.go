package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend/cuda/emu"
)

// TestLogitsCUDAStandIns: `minitron logits --device cuda --grads`, run on
// the CPU stand-ins for the CUDA libraries, writes transformers' logits,
// loss and every gradient within bfloat16 tolerances (the CUDA backend
// stores tensors in bf16: 3e-2 on logits, 8e-2 on gradients, as the GPU
// fixture parity test of backend/cuda explains).
func TestLogitsCUDAStandIns(t *testing.T) {
	lib := emu.Dir(t)
	dir := filepath.Join(fixtures, "nemotron-odd")
	golden := filepath.Join(dir, "golden.safetensors")
	out := filepath.Join(t.TempDir(), "out.safetensors")
	args := []string{"logits", "--device", "cuda", "--model", dir, "--input", golden, "--output", out, "--grads"}
	r := runEnv(t, emu.Env(lib), "", args...)
	if r.code != 0 {
		t.Fatalf("minitron %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	errs := goldenErrors(t, out, golden, "logits", "loss", "grad.")
	if len(errs) != 2+34 { // logits, loss and the 34 parameters of the 3-layer model
		t.Fatalf("compared %d tensors", len(errs))
	}
	worst := 0.0
	for name, e := range errs {
		tol := 8e-2
		switch name {
		case "logits":
			tol = 3e-2
		case "loss":
			tol = 1e-2
		default:
			worst = max(worst, e)
		}
		if e > tol {
			t.Errorf("%s: relative error %.3g > %.3g", name, e, tol)
		}
	}
	t.Logf("logits %.3g, loss %.3g, worst gradient %.3g relative error", errs["logits"], errs["loss"], worst)
}
