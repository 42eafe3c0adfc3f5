package cuda_test

import (
	"math"
	"testing"

	"github.com/minitron/minitron/backend"
)

// TestGPUAdamWNoise: AdamW steps far below one bfloat16 unit of the
// weights move bfloat16 weights only through stochastic rounding. Two
// tensors of the same shape with the same values and gradient, updated in
// the same step, get independent rounding noise when their ids differ and
// identical results when they are the same; on average the rounding is
// unbiased (the mean change is the float32 update).
func TestGPUAdamWNoise(t *testing.T) {
	b := device(t)
	const n = 1 << 14
	w0 := make([]float32, n)
	g := make([]float32, n)
	for i := range w0 {
		w0[i] = 0.01 + 0.001*float32(i%7) // bf16 unit here: 2^-14 ≈ 6.1e-5
		g[i] = 1
	}
	p := backend.AdamW{LR: 1e-5, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, Step: 1, GradScale: 1}
	update := func(seed uint32) []float32 {
		t.Helper()
		w, err := b.FromFloat32(append([]float32(nil), w0...), n)
		if err != nil {
			t.Fatal(err)
		}
		gt, _ := b.FromFloat32(append([]float32(nil), g...), n)
		m, _ := b.New(backend.F32, n)
		v, _ := b.New(backend.F32, n)
		defer func() { b.Free(w); b.Free(gt); b.Free(m); b.Free(v) }()
		q := p
		q.Seed = seed
		if err := b.AdamW(w, gt, m, v, q); err != nil {
			t.Fatal(err)
		}
		out, err := b.ToFloat32(w)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, a2, c := update(0), update(0), update(1)
	same, differ := 0, 0
	var mean float64
	for i := range a {
		if a[i] == a2[i] {
			same++
		}
		if a[i] != c[i] {
			differ++
		}
		mean += float64(a[i]) - float64(backend.BF16ToF32(backend.F32ToBF16(w0[i])))
	}
	mean /= n
	if same != n {
		t.Errorf("the same tensor id gave different results in %d of %d elements", n-same, n)
	}
	// The update (lr·1 = 1e-5) is about a sixth of a bf16 unit: each
	// element rounds up with probability ~1/6, independently for the two
	// ids, so about 2·(1/6)(5/6) ≈ 28% of them differ.
	if differ < n/10 {
		t.Errorf("tensors with ids 0 and 1 differ in only %d of %d elements: they share their rounding noise", differ, n)
	}
	// Unbiased: the mean change is −lr (Adam's first step is lr·sign(g)),
	// within a few standard errors (each change is 0 or −1 unit ≈ 6e-5).
	if math.Abs(mean+1e-5) > 5*6.1e-5/math.Sqrt(n) {
		t.Errorf("mean change %.3g, want −1e-5: stochastic rounding is biased", mean)
	}
}
