package vec

import (
	"math"
	"math/rand/v2"
	"testing"
)

func check(t *testing.T, name string) {
	var xs []float32
	for x := float32(-90); x < 90; x += 0.00731 {
		xs = append(xs, x)
	}
	r := rand.New(rand.NewPCG(1, 1))
	for range 10000 {
		xs = append(xs, float32(r.NormFloat64()*10))
	}
	xs = append(xs, 0, -0, 88.7, 88.73, -87.3, -87.34, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 1e-30, -1e-30)
	for len(xs)%16 != 5 { // exercise the scalar tail too
		xs = append(xs, 0.5)
	}
	got := append([]float32(nil), xs...)
	Exp(got)
	worst := 0.0
	for i, x := range xs {
		g := float64(got[i])
		switch {
		case x != x:
			if g == g {
				t.Fatalf("%s: exp(NaN) = %v", name, g)
			}
			continue
		case x > maxX:
			if !math.IsInf(g, 1) {
				t.Fatalf("%s: exp(%v) = %v, want +Inf", name, x, g)
			}
			continue
		case x < minX:
			if g != 0 {
				t.Fatalf("%s: exp(%v) = %v, want 0", name, x, g)
			}
			continue
		}
		w := math.Exp(float64(x))
		e := math.Abs(g-w) / w
		worst = max(worst, e)
		// A few float32 ulps: the polynomial is exact to ~1e-7 and float32
		// rounding adds up to 6e-8 per operation.
		if e > 3e-7 {
			t.Fatalf("%s: exp(%v) = %v, want %v (relative error %.3g)", name, x, g, w, e)
		}
	}
	t.Logf("%s: worst relative error %.3g", name, worst)
}

func TestExp(t *testing.T) {
	check(t, "dispatch")
	saved := expKernel
	defer func() { expKernel = saved }()
	expKernel = nil
	check(t, "generic")
}

func BenchmarkExp(b *testing.B) {
	v := make([]float32, 4096)
	for range b.N {
		for i := range v {
			v[i] = float32(i%200) * -0.05
		}
		Exp(v)
	}
}
