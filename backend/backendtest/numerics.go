package backendtest

import (
	"math"

	"github.com/minitron/minitron/backend"
)

// Parts of the suite for training numerics: the global gradient norm over
// many tensors, the float32 master-weight update and its bfloat16 copy,
// and losses over logits that contain −inf.

// upOf uploads x into a tensor of storage dt and returns it with the
// values the backend holds.
func (s *suite) upOf(dt backend.DType, x []float64, shape ...int) (backend.Tensor, []float64) {
	s.t.Helper()
	t := s.zerosOf(dt, shape...)
	f := make([]float32, len(x))
	for i, v := range x {
		f[i] = float32(v)
	}
	s.do(s.b.Write(t, f))
	return t, s.down(t)
}

// squaredNorm: one call over tensors of both storages and odd sizes (an
// empty one, one spanning many thread blocks) against float64, the same
// value on a second call, and the sum of single-tensor calls.
func (s *suite) squaredNorm() {
	sizes := []int{0, 1, 7, 257, 1000, 70001, 3}
	var ts []backend.Tensor
	var want, single float64
	for i, n := range sizes {
		dt := s.b.FloatDType()
		if i%2 == 1 {
			dt = backend.F32
		}
		x := s.randn(n)
		for j := range x {
			x[j] *= float64(i + 1) // tensors of different scales
		}
		t, v := s.upOf(dt, x, n)
		ts = append(ts, t)
		for _, e := range v {
			want += e * e
		}
		one, err := s.b.SquaredNorm(t)
		s.do(err)
		single += one
	}
	got, err := s.b.SquaredNorm(ts...)
	s.do(err)
	// Both sides add exactly representable squares in float64; only the
	// order of the additions differs (relative error ~1e-16 per term).
	if math.Abs(got-want) > 1e-12*want {
		s.t.Fatalf("squared norm of %d tensors %v, want %v", len(ts), got, want)
	}
	if math.Abs(single-want) > 1e-12*want {
		s.t.Fatalf("sum of single-tensor squared norms %v, want %v", single, want)
	}
	again, err := s.b.SquaredNorm(ts...)
	s.do(err)
	if again != got {
		s.t.Fatalf("squared norm not deterministic: %v then %v", got, again)
	}
	none, err := s.b.SquaredNorm()
	s.do(err)
	if none != 0 {
		s.t.Fatalf("squared norm of no tensors %v", none)
	}
	ids := s.upInt([]int32{1, 2}, 2)
	if _, err := s.b.SquaredNorm(ts[0], ids); err == nil {
		s.t.Fatal("squared norm of an I32 tensor accepted")
	}
}

// masterWeights: AdamW on float32 weights, gradient and moments (master
// weights, as mixed-precision training keeps them) is float32 arithmetic
// on every backend, whatever its storage of activations; the bfloat16 (or
// FloatDType) copy refreshed with Copy is the master rounded to nearest.
func (s *suite) masterWeights() {
	const n = 777
	w, wv := s.upOf(backend.F32, s.randn(n), n)
	m, v := s.zeros32(n), s.zeros32(n)
	copyW := s.zeros(n)
	mv, vv := make([]float64, n), make([]float64, n)
	p := backend.AdamW{LR: 0.003, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, GradScale: 0.7, Seed: 3}
	for step := 1; step <= 3; step++ {
		g, gv := s.upOf(backend.F32, s.randn(n), n)
		p.Step = step
		s.do(s.b.AdamW(w, g, m, v, p))
		s.do(s.b.Copy(copyW, w))
		b1, b2 := float64(p.Beta1), float64(p.Beta2)
		bc1, bc2 := 1-math.Pow(b1, float64(step)), 1-math.Pow(b2, float64(step))
		for i := range wv {
			gi := gv[i] * float64(p.GradScale)
			mv[i] = b1*mv[i] + (1-b1)*gi
			vv[i] = b2*vv[i] + (1-b2)*gi*gi
			wv[i] = wv[i]*(1-float64(p.LR)*float64(p.WeightDecay)) - float64(p.LR)/bc1*mv[i]/(math.Sqrt(vv[i])/math.Sqrt(bc2)+float64(p.Eps))
		}
		// float32 arithmetic on float32 storage: a few ulps per step.
		s.close("master w", s.down(w), wv, 1e-6)
		s.close("m", s.down(m), mv, 1e-6)
		s.close("v", s.down(v), vv, 1e-6)
		// The copy is the master rounded once, to nearest.
		master, cp := s.down(w), s.down(copyW)
		for i := range master {
			want := float32(master[i])
			if s.b.FloatDType() == backend.BF16 {
				want = backend.BF16ToF32(backend.F32ToBF16(want))
			}
			if float32(cp[i]) != want {
				s.t.Fatalf("step %d: weight copy [%d] = %v, want the master %v rounded to %v", step, i, cp[i], master[i], want)
			}
		}
		s.b.Free(g)
	}
}

// infLogits: −inf logits (masked tokens) carry zero probability. With a
// row-per-block kernel striding over a row of 131 by 32 or more threads,
// the first value some threads fold into their running max/sum is −inf
// and a finite one follows (a −inf added to an empty state must leave it
// empty, not NaN); other threads see only −inf, or −inf in the middle or
// at the end of their slice.
func (s *suite) infLogits() {
	const n, v = 3, 131
	inf := math.Inf(-1)
	masked := func(j int) bool { return j < 4 || j%32 == 5 || (j >= 64 && j < 96) || j == 130 }
	x := s.randn(n * v)
	for i := range n {
		for j := range v {
			if masked(j) {
				x[i*v+j] = inf
			}
		}
	}
	s.run("CrossEntropy", func(s *suite) {
		lg, lv := s.up(x, n, v)
		targets := []int32{7, 40, 100}
		losses, dl := s.zeros32(n), s.zeros(n, v)
		const scale = 0.5
		s.do(s.b.CrossEntropy(losses, dl, lg, s.upInt(targets, n), scale))
		s.close("losses", s.down(losses), refCrossEntropy(lv, targets, v), s.tol.Loss)
		want := make([]float64, n*v)
		for i, t := range targets {
			lp := refLogSoftmax(lv[i*v:(i+1)*v], 1)
			for j := range v {
				want[i*v+j] = scale * math.Exp(lp[j])
				if j == int(t) {
					want[i*v+j] -= scale
				}
			}
		}
		s.close("dlogits", s.down(dl), want, s.tol.Activation)
	})
	s.run("KLTopK", func(s *suite) {
		// The teacher's top 3 are unmasked tokens; the student gives the
		// masked ones −inf. Renormalized, the loss is finite.
		const k, T = 3, 1.0
		st, sv := s.up(x, n, v)
		ids := []int32{10, 12, 40, 7, 100, 129, 8, 33, 96}
		logp := []float64{-0.5, -1.5, -2.5, -0.2, -2, -3, -1, -1.1, -1.2}
		idt := s.upInt(ids, n, k)
		lpt, lpv := s.up(logp, n, k)
		losses, ds := s.zeros32(n), s.zeros(n, v)
		p := backend.KL{Temperature: T, Scale: 1, Missing: backend.MissingRenormalize}
		s.do(s.b.KLTopK(losses, ds, st, idt, lpt, p))
		wantL := make([]float64, n)
		wantG := make([]float64, n*v)
		for i := range n {
			lp := refTopKTeacher(ids[i*k:(i+1)*k], lpv[i*k:(i+1)*k], v, backend.MissingRenormalize)
			lq := refLogSoftmax(sv[i*v:(i+1)*v], T)
			wantL[i] = refKL(lp, lq, T, false)
			for j := range v {
				wantG[i*v+j] = T * (math.Exp(lq[j]) - math.Exp(lp[j]))
			}
		}
		s.close("losses", s.down(losses), wantL, s.tol.Loss)
		s.close("dstudent", s.down(ds), wantG, s.tol.Activation)
	})
}
