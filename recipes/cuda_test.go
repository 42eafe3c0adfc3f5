package recipes

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/minitron/minitron/backend/cuda/cudatest"
	"github.com/minitron/minitron/train"
)

// TestCUDARecipeResume: a recipe run on the CUDA backend (on the CPU
// stand-ins for the CUDA libraries), interrupted during distillation and
// run again, distills to the same bytes (float32 master weights and
// moments) as an uninterrupted run.
func TestCUDARecipeResume(t *testing.T) {
	b := cudatest.Backend(t)
	var outs []string
	for _, interrupt := range []bool{false, true} {
		r, err := Load(setup(t), []string{"device=cuda", "eval.samples=[]"})
		if err != nil {
			t.Fatal(err)
		}
		if interrupt {
			stop, finished := make(chan struct{}), make(chan struct{})
			go func() {
				for {
					select {
					case <-finished:
						return
					default:
					}
					if ms, _ := train.ReadMetrics(filepath.Join(r.Out, "distill")); len(ms) > 0 && ms[len(ms)-1].Step >= 3 {
						close(stop)
						return
					}
					runtime.Gosched()
				}
			}()
			_, err := Run(context.Background(), r, RunOptions{Backend: b, Interrupt: stop})
			close(finished)
			if !errors.Is(err, train.ErrInterrupted) {
				t.Fatalf("interrupted run: %v", err)
			}
		}
		if _, err := Run(context.Background(), r, RunOptions{Backend: b}); err != nil {
			t.Fatal(err)
		}
		outs = append(outs, r.Out)
	}
	last := filepath.Join("distill", "checkpoint-0000006")
	for _, f := range []string{"model.safetensors", "optimizer.safetensors"} {
		a, _ := os.ReadFile(filepath.Join(outs[0], last, f))
		c, _ := os.ReadFile(filepath.Join(outs[1], last, f))
		if len(a) == 0 || !bytes.Equal(a, c) {
			t.Fatalf("%s differs after resuming", f)
		}
	}
}
