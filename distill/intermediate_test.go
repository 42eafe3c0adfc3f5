package distill

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/train"
)

// intermediateStep runs one LossAndGrad and returns the KD loss, the
// intermediate loss L_is and the gradients (model and projection).
func intermediateStep(t *testing.T, o *Objective, m *model.Model, in model.Input, targets []int32) (float64, float64, *model.Grads, []float32) {
	t.Helper()
	a, _ := m.NewActivations(len(in.IDs), true)
	defer a.Free(m.Backend)
	g, _ := m.NewGrads()
	if err := m.Backend.Fill(o.projG, 0); err != nil {
		t.Fatal(err)
	}
	l, err := o.LossAndGrad(m, a, in, targets, 1, g)
	if err != nil {
		t.Fatal(err)
	}
	pg, _ := m.Backend.ToFloat32(o.projG)
	return l, o.Extra()["intermediate"], g, pg
}

// TestIntermediateGradient checks the projection's gradient and a student
// weight's gradient against finite differences of KD + w·L_is.
func TestIntermediateGradient(t *testing.T) {
	teacher, student := load(t, "nemotron-tiny"), perturbed(t, "nemotron-tiny", 0.05)
	L := student.Config.NumLayers
	const w = 0.8
	o, err := NewObjective(teacher, student, KD{Temperature: 1, Intermediate: Intermediate{Layers: [][2]int{{1, 2}, {L, L}}, Weight: w}})
	if err != nil {
		t.Fatal(err)
	}
	in, targets := batch()
	b := student.Backend
	// Move W off the identity so its gradient is not special.
	pv, _ := b.ToFloat32(o.proj)
	for i := range pv {
		pv[i] += 0.05 * float32(math.Sin(float64(i)))
	}
	b.Write(o.proj, pv)
	_, lis, g, pg := intermediateStep(t, o, student, in, targets)
	if lis <= 0 || lis > 2 {
		t.Fatalf("intermediate loss %v", lis)
	}
	total := func() float64 {
		l, lis, _, _ := intermediateStep(t, o, student, in, targets)
		return l + w*lis
	}
	const h = 1e-2
	for _, j := range []int{0, 5, len(pv) / 2, len(pv) - 3} {
		old := pv[j]
		pv[j] = old + h
		b.Write(o.proj, pv)
		up := total()
		pv[j] = old - h
		b.Write(o.proj, pv)
		down := total()
		pv[j] = old
		b.Write(o.proj, pv)
		fd := (up - down) / (2 * h)
		if math.Abs(fd-float64(pg[j])) > 3e-2*math.Abs(fd)+1e-5 {
			t.Errorf("projection[%d]: gradient %v, finite difference %v", j, pg[j], fd)
		}
	}
	// A first-layer weight: reached by both the logits and the states.
	pi := 2
	wv, _ := b.ToFloat32(student.Weights[pi])
	gv, _ := b.ToFloat32(g.T[pi])
	best := 0
	for i := range gv {
		if math.Abs(float64(gv[i])) > math.Abs(float64(gv[best])) {
			best = i
		}
	}
	set := func(d float32) {
		v := append([]float32(nil), wv...)
		v[best] += d
		b.Write(student.Weights[pi], v)
	}
	set(h)
	up := total()
	set(-h)
	down := total()
	set(0)
	if fd := (up - down) / (2 * h); math.Abs(fd-float64(gv[best])) > 3e-2*math.Abs(fd)+1e-5 {
		t.Errorf("%s[%d]: gradient %v, finite difference %v", student.Params[pi].Name, best, gv[best], fd)
	}
}

// TestIntermediateBalance: with weight 0, α makes α·L_is equal the logit loss.
func TestIntermediateBalance(t *testing.T) {
	teacher, student := load(t, "llama-tiny"), perturbed(t, "llama-tiny", 0.05)
	o, err := NewObjective(teacher, student, KD{Temperature: 1, Intermediate: Intermediate{Layers: [][2]int{{1, 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	in, targets := batch()
	l, lis, _, _ := intermediateStep(t, o, student, in, targets)
	if a := o.Extra()["intermediate_alpha"]; math.Abs(a*lis-l) > 1e-6*l {
		t.Fatalf("α %v × L_is %v = %v, logit loss %v", a, lis, a*lis, l)
	}
}

func TestIntermediateErrors(t *testing.T) {
	teacher, student := load(t, "nemotron-tiny"), load(t, "nemotron-tiny")
	L := student.Config.NumLayers
	for name, pairs := range map[string][][2]int{
		"student layer 0":     {{0, 1}},
		"beyond the teacher":  {{1, L + 1}},
		"student layer twice": {{1, 1}, {1, 2}},
		"beyond the student":  {{L + 1, 1}},
	} {
		if _, err := NewObjective(teacher, student, KD{Temperature: 1, Intermediate: Intermediate{Layers: pairs}}); err == nil || !strings.Contains(err.Error(), "kd.intermediate") {
			t.Errorf("%s: %v", name, err)
		}
	}
	c := Default()
	c.Model.Checkpoint = "student"
	c.Data.Datasets = []train.Dataset{{Path: "data", Weight: 1}}
	c.Train.Steps = 10
	c.Teacher.Cache = "somewhere"
	c.KD.Intermediate.Layers = [][2]int{{1, 1}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "online") {
		t.Fatalf("intermediate with a cache: %v", err)
	}
}

// TestIntermediateResume: the projection is trained, checkpointed with its
// moments, and an interrupted run resumes to the same bytes.
func TestIntermediateResume(t *testing.T) { intermediateResume(t, cpu.New()) }

// intermediateResume distills with the intermediate-state loss on b, is
// interrupted after step 3, resumes, and checks the final checkpoint
// against an uninterrupted run's.
func intermediateResume(t *testing.T, b backend.Backend) {
	ds, teacherDir, _, student := cacheSetup(t)
	sdir := filepath.Join(t.TempDir(), "student")
	os.MkdirAll(sdir, 0o755)
	student.Save(sdir, backend.F32, 1<<30)
	cfg := Default()
	cfg.Model.Checkpoint = sdir
	cfg.Teacher.Model = teacherDir
	cfg.KD.Intermediate.Layers = [][2]int{{1, 1}, {2, 2}}
	cfg.Data = train.DataConfig{Datasets: []train.Dataset{{Path: ds, Weight: 1}}, SeqLen: 8, Seed: 1, Shuffle: true}
	cfg.Train.MicroBatch, cfg.Train.Steps = 4, 6
	cfg.Optimizer.Warmup = 1
	cfg.Eval.Batches = 0
	cfg.Checkpoint.Every = 2
	run := func(out string, stop <-chan struct{}) (*train.Result, error) {
		res, _, err := Run(context.Background(), &cfg, train.RunOptions{Out: out, Backend: b, Interrupt: stop})
		return res, err
	}
	ref := t.TempDir()
	if _, err := run(ref, nil); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	stop := make(chan struct{})
	go func() {
		for {
			if ms, _ := train.ReadMetrics(out); len(ms) > 0 && ms[len(ms)-1].Step >= 3 {
				close(stop)
				return
			}
			runtime.Gosched()
		}
	}()
	if _, err := run(out, stop); !errors.Is(err, train.ErrInterrupted) {
		t.Fatalf("interrupted run: %v", err)
	}
	res, err := run(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.ResumedFrom < 3 {
		t.Fatalf("resumed from %d", res.ResumedFrom)
	}
	last := "checkpoint-0000006"
	for _, f := range []string{"model.safetensors", "optimizer.safetensors"} {
		a, _ := os.ReadFile(filepath.Join(ref, last, f))
		b, _ := os.ReadFile(filepath.Join(out, last, f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("%s differs after resuming", f)
		}
	}
	ts, err := checkpoints.Open(filepath.Join(out, last, "optimizer.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	w, err := ts.Float32("extra.intermediate_projection", 32, 16)
	if err != nil {
		t.Fatal(err)
	}
	if b.FloatDType() == backend.BF16 {
		// The checkpoint holds the float32 master weights, not their
		// bfloat16 roundings: the projection's and the student's.
		ms, err := checkpoints.Open(filepath.Join(out, last))
		if err != nil {
			t.Fatal(err)
		}
		defer ms.Close()
		q, err := ms.Float32("model.layers.0.self_attn.q_proj.weight", 32, 16)
		if err != nil {
			t.Fatal(err)
		}
		for what, v := range map[string][]float32{"projection": w, "q_proj": q} {
			if notBF16(v) == 0 {
				t.Errorf("the checkpoint's %s holds only bfloat16 values: no master weights", what)
			}
		}
	}
	moved := 0.0
	for i, x := range w {
		id := 0.0
		if i/16 == i%16 {
			id = 1
		}
		moved += math.Abs(float64(x) - id)
	}
	if moved < 1e-3 {
		t.Fatal("the projection did not train")
	}
	ms, _ := train.ReadMetrics(ref)
	if ms[0].Extra["intermediate"] <= 0 {
		t.Fatalf("intermediate loss not logged: %v", ms[0].Extra)
	}
}

// notBF16 counts the values that bfloat16 cannot represent.
func notBF16(v []float32) int {
	n := 0
	for _, x := range v {
		if backend.BF16ToF32(backend.F32ToBF16(x)) != x {
			n++
		}
	}
	return n
}
