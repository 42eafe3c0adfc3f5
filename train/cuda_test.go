package train

import (
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/backend/cuda/cudatest"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/model"
)

// The CUDA backend's training numerics, run on the CPU stand-ins for the
// CUDA libraries (package cudatest).

// tensorsOf reads every parameter of a checkpoint directory as float32.
func tensorsOf(t *testing.T, dir string, ps []model.Param) [][]float32 {
	t.Helper()
	ts, err := checkpoints.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	out := make([][]float32, len(ps))
	for i, p := range ps {
		if out[i], err = ts.Float32(p.Name, p.Shape...); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestCUDAMatchesCPU: twelve AdamW steps continuing the committed tiny
// teacher (micro-batch 2 × 64 tokens, accumulation 4, LR 1e-3) with the
// GPU defaults (bfloat16 weights and activations; float32 gradients,
// master weights and moments) end within 2% of the float32 CPU run in
// train and validation loss, and move the weights as the CPU run does.
func TestCUDAMatchesCPU(t *testing.T) {
	gpu := cudatest.Backend(t)
	c := Default()
	c.Model.Checkpoint = "../models/tiny-teacher"
	c.Data.Datasets = []Dataset{{Path: goCorpus(t), Weight: 1}}
	c.Data.SeqLen, c.Data.ValFraction = 64, 0.05
	c.Train.MicroBatch, c.Train.Accumulation, c.Train.Steps = 2, 4, 12
	c.Optimizer.LR, c.Optimizer.MinLR, c.Optimizer.Warmup = 1e-3, 1e-4, 0
	c.Eval.Every, c.Eval.Batches = 0, 4
	c.Checkpoint.Every = 0
	c.Device = "cuda"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	runs := map[string]*Result{}
	dirs := map[string]string{}
	for _, r := range []struct {
		name string
		b    backend.Backend
	}{{"cpu", cpu.New()}, {"cuda", gpu}} {
		dirs[r.name] = t.TempDir()
		res, err := Run(t.Context(), &c, RunOptions{Out: dirs[r.name], Backend: r.b, Log: testLog{t}})
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		runs[r.name] = res
	}
	cp, cu := runs["cpu"], runs["cuda"]
	t.Logf("train loss: cpu %.5f, cuda %.5f; validation loss: cpu %.5f, cuda %.5f", cp.TrainLoss, cu.TrainLoss, cp.ValLoss, cu.ValLoss)
	for _, x := range []struct {
		what     string
		cpu, gpu float64
	}{{"train loss", cp.TrainLoss, cu.TrainLoss}, {"validation loss", cp.ValLoss, cu.ValLoss}} {
		if d := math.Abs(x.gpu-x.cpu) / x.cpu; !(d <= 0.02) {
			t.Errorf("%s: cuda %.5f, cpu %.5f: %.2f%% apart (at most 2%%)", x.what, x.gpu, x.cpu, 100*d)
		}
	}
	// The weight updates of the two runs agree: the checkpoint of step 12
	// holds the float32 master weights of the CUDA run.
	mc, err := model.LoadConfig(filepath.Join(c.Model.Checkpoint, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	ps := mc.Params()
	w0 := tensorsOf(t, c.Model.Checkpoint, ps)
	wc := tensorsOf(t, filepath.Join(dirs["cpu"], checkpointName(12)), ps)
	wg := tensorsOf(t, filepath.Join(dirs["cuda"], checkpointName(12)), ps)
	var num, den float64
	for i := range ps {
		for j := range w0[i] {
			dc, dg := float64(wc[i][j]-w0[i][j]), float64(wg[i][j]-w0[i][j])
			num += (dg - dc) * (dg - dc)
			den += dc * dc
		}
	}
	e := math.Sqrt(num / den)
	t.Logf("weight updates: ‖Δcuda − Δcpu‖ / ‖Δcpu‖ = %.3f", e)
	if !(e < 0.25) {
		t.Errorf("the CUDA run's weight updates differ from the CPU run's by %.3f of their size", e)
	}
}

// TestCUDAResumeBitIdentical: on the CUDA backend, a run interrupted after
// steps 2 and 5 and resumed ends with the same master weights, moments
// and per-step losses, bit for bit, as an uninterrupted run; the
// checkpoints hold the float32 master weights.
func TestCUDAResumeBitIdentical(t *testing.T) {
	gpu := cudatest.Backend(t)
	c := tinyRun(t, 8)
	c.Device = "cuda"
	c.Train.MicroBatch, c.Train.Accumulation = 2, 2
	ref := t.TempDir()
	if _, err := runStopping(t, c, ref, gpu, 1<<30); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	for _, stopAt := range []int{2, 5} {
		if _, err := runStopping(t, c, out, gpu, stopAt); !errors.Is(err, ErrInterrupted) {
			t.Fatalf("interrupt at %d: %v", stopAt, err)
		}
	}
	res, err := runStopping(t, c, out, gpu, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if res.ResumedFrom < 5 {
		t.Fatalf("resumed from %d", res.ResumedFrom)
	}
	last := checkpointName(8)
	for _, f := range []string{"model.safetensors", "optimizer.safetensors"} {
		sameFile(t, filepath.Join(ref, last, f), filepath.Join(out, last, f))
	}
	sameMetrics(t, deterministic(t, ref), deterministic(t, out))
	mc, _ := model.LoadConfig(c.Model.Config)
	ws := tensorsOf(t, filepath.Join(out, last), mc.Params())
	off := 0
	for _, w := range ws {
		for _, x := range w {
			if backend.BF16ToF32(backend.F32ToBF16(x)) != x {
				off++
			}
		}
	}
	if off == 0 {
		t.Fatal("the checkpoint holds only bfloat16 values: no master weights")
	}
}

// BenchmarkCUDAGradAccumulation measures what accumulating gradients over
// micro-batches in bfloat16 costs, against float32 accumulators: the tiny
// teacher's gradient over K micro-batches of 1 × 32 tokens (scaled by
// 1/288, as a 288-micro-batch step scales them), summed on the CUDA
// backend into a float32 and a bfloat16 accumulator from the same
// per-micro-batch gradients, and compared with the CPU's float32 sum, at
// K = 1, 8, 32, 96, 288. It logs a table; run it once:
//
//	go test ./train -run - -bench CUDAGradAccumulation -benchtime 1x
func BenchmarkCUDAGradAccumulation(b *testing.B) {
	gpu := cudatest.Backend(b)
	const K, T = 288, 32
	marks := map[int]bool{1: true, 8: true, 32: true, 96: true, 288: true}
	c := Default()
	c.Data.Datasets = []Dataset{{Path: goCorpus(b), Weight: 1}}
	c.Data.SeqLen, c.Data.ValFraction = T, 0.05
	c.Train.MicroBatch, c.Train.Steps = 1, 1
	tr, _, err := OpenData(&c, 4000)
	if err != nil {
		b.Fatal(err)
	}
	batches := make([][]int32, K)
	for i := range batches {
		if batches[i], err = tr.Batch(1); err != nil {
			b.Fatal(err)
		}
	}
	type sums struct{ cpu, f32, bf16 [][]float32 }
	at := map[int]*sums{}
	for k := range marks {
		at[k] = &sums{}
	}
	for _, side := range []string{"cpu", "cuda"} {
		var be backend.Backend = cpu.New()
		if side == "cuda" {
			be = gpu
		}
		m, err := model.Load("../models/tiny-teacher", be, nil)
		if err != nil {
			b.Fatal(err)
		}
		acts, _ := m.NewActivations(T, true)
		step, _ := m.NewGradsIn(backend.F32)
		acc32, _ := m.NewGradsIn(backend.F32)
		acc16, _ := m.NewGradsIn(backend.BF16)
		for k := 1; k <= K; k++ {
			ids, targets := split(batches[k-1], 1, T)
			if err := step.Zero(be); err != nil {
				b.Fatal(err)
			}
			if _, err := m.LossAndGrad(acts, model.Input{B: 1, T: T, IDs: ids}, targets, 1.0/K, step); err != nil {
				b.Fatal(err)
			}
			// acc += step, rounded to the accumulator's storage, as a
			// backward pass accumulating into it rounds each sum.
			for i := range step.T {
				be.Add(acc32.T[i], acc32.T[i], step.T[i])
				be.Add(acc16.T[i], acc16.T[i], step.T[i])
			}
			if !marks[k] {
				continue
			}
			read := func(g *model.Grads) [][]float32 {
				out := make([][]float32, len(g.T))
				for i, x := range g.T {
					out[i], _ = be.ToFloat32(x)
				}
				return out
			}
			if side == "cpu" {
				at[k].cpu = read(acc32)
			} else {
				at[k].f32, at[k].bf16 = read(acc32), read(acc16)
			}
		}
		acts.Free(be)
		step.Free(be)
		acc32.Free(be)
		acc16.Free(be)
		m.Free()
	}
	rel := func(got, want [][]float32) float64 {
		var num, den float64
		for i := range want {
			for j := range want[i] {
				d := float64(got[i][j]) - float64(want[i][j])
				num += d * d
				den += float64(want[i][j]) * float64(want[i][j])
			}
		}
		return math.Sqrt(num / den)
	}
	b.Logf("%-4s %-26s %-26s %s", "K", "cuda f32 sum vs cpu", "cuda bf16 sum vs cpu", "bf16 sum vs f32 sum")
	for _, k := range []int{1, 8, 32, 96, 288} {
		s := at[k]
		b.Logf("%-4d %-26.4f %-26.4f %.4f", k, 100*rel(s.f32, s.cpu), 100*rel(s.bf16, s.cpu), 100*rel(s.bf16, s.f32))
	}
	b.ReportMetric(100*rel(at[K].f32, at[K].cpu), "%err-f32")
	b.ReportMetric(100*rel(at[K].bf16, at[K].cpu), "%err-bf16")
}
