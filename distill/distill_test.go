package distill

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/model"
)

const fixtures = "../testdata/hf"

func load(t *testing.T, name string) *model.Model {
	t.Helper()
	m, err := model.Load(filepath.Join(fixtures, name), cpu.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// perturbed returns a copy of m's weights with noise added (a "student").
func perturbed(t *testing.T, name string, scale float64) *model.Model {
	m := load(t, name)
	r := rand.New(rand.NewPCG(5, 6))
	for _, w := range m.Weights {
		v, _ := m.Backend.ToFloat32(w)
		for i := range v {
			v[i] += float32(r.NormFloat64() * scale)
		}
		nt, _ := m.Backend.FromFloat32(v, w.Shape()...)
		m.Backend.Copy(w, nt)
	}
	return m
}

func logSoftmax(x []float32, T float64) []float64 {
	out := make([]float64, len(x))
	mx := math.Inf(-1)
	for _, v := range x {
		mx = math.Max(mx, float64(v)/T)
	}
	var s float64
	for _, v := range x {
		s += math.Exp(float64(v)/T - mx)
	}
	for i, v := range x {
		out[i] = float64(v)/T - mx - math.Log(s)
	}
	return out
}

func batch() (model.Input, []int32) {
	r := rand.New(rand.NewPCG(1, 1))
	ids := make([]int32, 2*9)
	for i := range ids {
		ids[i] = int32(r.IntN(512))
	}
	return model.Input{B: 2, T: 9, IDs: ids}, model.NextTokenTargets(ids, 2, 9)
}

// directLoss computes the distillation loss from full logits in float64.
func directLoss(t *testing.T, teacher, student *model.Model, in model.Input, targets []int32, kd KD) float64 {
	logits := func(m *model.Model) []float32 {
		a, _ := m.NewActivations(len(in.IDs), false)
		lg, err := m.Forward(a, in, model.Options{})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := m.Backend.ToFloat32(lg)
		return v
	}
	tl, sl := logits(teacher), logits(student)
	V := teacher.Config.VocabSize
	n := len(in.IDs)
	var kl, ce float64
	ceRows := 0
	for i := range n {
		lp := logSoftmax(tl[i*V:(i+1)*V], kd.Temperature)
		lq := logSoftmax(sl[i*V:(i+1)*V], kd.Temperature)
		var k float64
		for j := range lp {
			if kd.Reverse {
				k += math.Exp(lq[j]) * (lq[j] - lp[j])
			} else {
				k += math.Exp(lp[j]) * (lp[j] - lq[j])
			}
		}
		kl += kd.Temperature * kd.Temperature * k
		if targets[i] >= 0 {
			ce -= logSoftmax(sl[i*V:(i+1)*V], 1)[targets[i]]
			ceRows++
		}
	}
	return kl/float64(n) + kd.CEWeight*ce/float64(ceRows)
}

func kdLoss(t *testing.T, o *Objective, m *model.Model, in model.Input, targets []int32) (float64, *model.Grads) {
	a, _ := m.NewActivations(len(in.IDs), true)
	g, _ := m.NewGrads()
	l, err := o.LossAndGrad(m, a, in, targets, 1, g)
	if err != nil {
		t.Fatal(err)
	}
	return l, g
}

func TestLossMatchesDirect(t *testing.T) {
	for _, kd := range []KD{{Temperature: 1}, {Temperature: 2}, {Temperature: 1, Reverse: true}, {Temperature: 1.5, CEWeight: 0.5}} {
		teacher, student := load(t, "llama-tiny"), perturbed(t, "llama-tiny", 0.02)
		o, err := NewObjective(teacher, student, kd)
		if err != nil {
			t.Fatal(err)
		}
		in, targets := batch()
		got, _ := kdLoss(t, o, student, in, targets)
		want := directLoss(t, teacher, student, in, targets, kd)
		if math.Abs(got-want) > 1e-4*math.Abs(want) {
			t.Errorf("%+v: loss %v, want %v", kd, got, want)
		}
	}
}

// TestGradientFiniteDifference checks d(loss)/d(weight) on the elements
// with the largest gradients of a few parameters.
func TestGradientFiniteDifference(t *testing.T) {
	teacher, student := load(t, "nemotron-tiny"), perturbed(t, "nemotron-tiny", 0.05)
	o, _ := NewObjective(teacher, student, KD{Temperature: 1, CEWeight: 0.3})
	in, targets := batch()
	_, g := kdLoss(t, o, student, in, targets)
	for _, pi := range []int{1, 5, 9, len(student.Params) - 1} {
		gv, _ := student.Backend.ToFloat32(g.T[pi])
		best := 0
		for i, x := range gv {
			if math.Abs(float64(x)) > math.Abs(float64(gv[best])) {
				best = i
			}
		}
		w := student.Weights[pi]
		wv, _ := student.Backend.ToFloat32(w)
		const h = 1e-2
		eval := func(d float32) float64 {
			v := append([]float32(nil), wv...)
			v[best] += d
			nt, _ := student.Backend.FromFloat32(v, w.Shape()...)
			student.Backend.Copy(w, nt)
			l, _ := kdLoss(t, o, student, in, targets)
			return l
		}
		fd := (eval(h) - eval(-h)) / (2 * h)
		eval(0)
		if math.Abs(fd-float64(gv[best])) > 2e-2*math.Abs(fd)+1e-5 {
			t.Errorf("%s[%d]: gradient %v, finite difference %v", student.Params[pi].Name, best, gv[best], fd)
		}
	}
}

func TestSelfDistillationIsZero(t *testing.T) {
	teacher, student := load(t, "nemotron-odd"), load(t, "nemotron-odd")
	o, _ := NewObjective(teacher, student, KD{Temperature: 1})
	r := rand.New(rand.NewPCG(2, 2))
	ids := make([]int32, 12)
	for i := range ids {
		ids[i] = int32(r.IntN(300))
	}
	in := model.Input{B: 1, T: 12, IDs: ids}
	l, g := kdLoss(t, o, student, in, model.NextTokenTargets(ids, 1, 12))
	if math.Abs(l) > 1e-6 {
		t.Fatalf("KL of a model with itself: %v", l)
	}
	for i, gt := range g.T {
		s, _ := student.Backend.SquaredNorm(gt)
		if s > 1e-10 {
			t.Fatalf("%s: gradient norm² %v", student.Params[i].Name, s)
		}
	}
}

func TestVocabularyMismatch(t *testing.T) {
	_, err := NewObjective(load(t, "nemotron-tiny"), load(t, "nemotron-odd"), KD{Temperature: 1})
	if err == nil || !strings.Contains(err.Error(), "vocabulary") {
		t.Fatalf("error %v", err)
	}
}

// TestValidationTeacherCache checks that validation, which keeps the
// teacher's final-norm states and cross-entropy of the batches it has seen,
// gives the same losses to the bit as validation without the cache (its
// budget used up), at every repetition, for a loss with and without the
// intermediate-state term; and that a seen batch with other targets gets
// its teacher cross-entropy computed again.
func TestValidationTeacherCache(t *testing.T) {
	teacher, student := load(t, "nemotron-tiny"), perturbed(t, "nemotron-tiny", 0.05)
	in, targets := batch()
	other := append([]int32(nil), in.IDs...)
	other[0] = (other[0] + 1) % 512
	in2 := model.Input{B: in.B, T: in.T, IDs: other}
	masked := append([]int32(nil), targets...)
	masked[3], masked[11] = -1, -1
	a, _ := student.NewActivations(len(in.IDs), false)
	defer a.Free(student.Backend)
	// validate runs passes validations of the batches in, in2 and, on the
	// last pass, in with masked targets; it returns every pass's
	// ValidationLosses and the batch losses.
	validate := func(t *testing.T, o *Objective, passes int) [][]float64 {
		var out [][]float64
		for p := range passes {
			o.BeginEval()
			var got []float64
			bs := []model.Input{in, in2}
			ts := [][]int32{targets, targets}
			if p == passes-1 {
				bs, ts = append(bs, in), append(ts, masked)
			}
			for i := range bs {
				l, err := o.Loss(student, a, bs[i], ts[i])
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, l)
			}
			s, te, kl := o.ValidationLosses()
			out = append(out, append(got, s, te, kl))
		}
		return out
	}
	L := student.Config.NumLayers
	for _, c := range []struct {
		name string
		kd   KD
	}{
		{"logits", KD{Temperature: 1}},
		{"intermediate", KD{Temperature: 1, Intermediate: Intermediate{Layers: [][2]int{{1, 1}, {L, L}}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cached, err := NewObjective(teacher, student, c.kd)
			if err != nil {
				t.Fatal(err)
			}
			defer cached.Free()
			plain, err := NewObjective(teacher, student, c.kd)
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Free()
			plain.valBytes = valCacheBytes // no room: every batch runs the teacher
			got, want := validate(t, cached, 3), validate(t, plain, 3)
			if len(plain.valHidden) != 0 || len(cached.valHidden) != 2 {
				t.Fatalf("%d and %d cached batches, want 0 and 2", len(plain.valHidden), len(cached.valHidden))
			}
			for p := range want {
				if !slices.Equal(got[p], want[p]) {
					t.Errorf("pass %d: losses %v with the cache, %v without", p, got[p], want[p])
				}
			}
			for i, c := range cached.valHidden {
				if c.targets == nil {
					t.Errorf("batch %d: no teacher cross-entropy kept", i)
				}
			}
			if te, kl := want[0][3], want[0][4]; te <= 0 || kl <= 0 {
				t.Fatalf("teacher loss %v, KL %v: want positive", te, kl)
			}
		})
	}
}
