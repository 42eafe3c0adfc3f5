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

func TestExpSum(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	run := func(t *testing.T) {
		for _, n := range []int{1, 7, 8, 9, 31, 64, 1000, 4003} {
			for _, c := range []struct{ scale, shift float32 }{{1, 0}, {1, 3.5}, {0.5, -2}, {2, 10}} {
				src := make([]float32, n)
				for i := range src {
					src[i] = float32(r.NormFloat64() * 5)
				}
				if n > 8 {
					src[3] = -200 // underflows to 0
				}
				dst := make([]float32, n)
				got := ExpSum(dst, src, c.scale, c.shift)
				var want float64
				for i, x := range src {
					w := math.Exp(float64(x*c.scale - c.shift))
					if float32(w) == 0 {
						w = 0
					}
					want += w
					if e := math.Abs(float64(dst[i])-w) / max(w, 1e-30); e > 3e-7 && w > 1e-37 {
						t.Fatalf("n=%d %+v: element %d: exp(%v*%v-%v) = %v, want %v", n, c, i, x, c.scale, c.shift, dst[i], w)
					}
				}
				if e := math.Abs(got-want) / want; e > 1e-6 {
					t.Fatalf("n=%d %+v: sum %v, want %v (relative error %.3g)", n, c, got, want, e)
				}
				// In place.
				in := append([]float32(nil), src...)
				if s := ExpSum(in, in, c.scale, c.shift); s != got {
					t.Fatalf("n=%d %+v: in place sum %v, want %v", n, c, s, got)
				}
				for i := range in {
					if in[i] != dst[i] {
						t.Fatalf("n=%d %+v: in place element %d: %v, want %v", n, c, i, in[i], dst[i])
					}
				}
			}
		}
		// NaN and infinity.
		v := []float32{0, float32(math.NaN()), 1, 2, 3, 4, 5, 6, 7}
		if s := ExpSum(v, v, 1, 0); !math.IsNaN(s) || !math.IsNaN(float64(v[1])) {
			t.Fatalf("NaN: sum %v, element %v", s, v[1])
		}
		v = []float32{0, 100, 1, 2, 3, 4, 5, 6}
		if s := ExpSum(v, v, 1, 0); !math.IsInf(s, 1) || !math.IsInf(float64(v[1]), 1) {
			t.Fatalf("overflow: sum %v, element %v", s, v[1])
		}
	}
	t.Run("dispatch", run)
	saved := expSumKernel
	defer func() { expSumKernel = saved }()
	expSumKernel = nil
	t.Run("generic", run)
}

func TestMax(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	run := func(t *testing.T) {
		for _, n := range []int{1, 5, 8, 9, 17, 31, 32, 33, 40, 64, 100, 4000} {
			for pos := range []int{0, 1, 2} {
				v := make([]float32, n)
				for i := range v {
					v[i] = float32(r.NormFloat64()) - 10
				}
				at := []int{0, n / 2, n - 1}[pos]
				v[at] = 3.25
				if got := Max(v); got != 3.25 {
					t.Fatalf("n=%d: max %v at %d, got %v", n, v[at], at, got)
				}
			}
		}
	}
	t.Run("dispatch", run)
	saved := maxKernel
	defer func() { maxKernel = saved }()
	maxKernel = nil
	t.Run("generic", run)
}

func BenchmarkExpSum(b *testing.B) {
	v := make([]float32, 4000)
	for i := range v {
		v[i] = float32(i%200) * 0.05
	}
	d := make([]float32, len(v))
	for range b.N {
		ExpSum(d, v, 1, 10)
	}
}

func TestDotDiff(t *testing.T) {
	for _, n := range []int{0, 1, 3, 4, 5, 13} {
		w, x, y := make([]float32, n), make([]float32, n+2), make([]float32, n+1)
		var want float64
		for i := range w {
			w[i], x[i], y[i] = float32(i+1), float32(2*i), float32(i*i)
			want += float64(i+1) * float64(2*i-i*i)
		}
		if got := DotDiff(w, x, y); got != want {
			t.Fatalf("n=%d: %v, want %v", n, got, want)
		}
	}
}

func TestElementwise(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	rnd := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	run := func(t *testing.T) {
		for _, n := range []int{0, 1, 7, 8, 9, 23, 64, 101} {
			x, y, z := rnd(n), rnd(n), rnd(n)
			if n > 2 {
				x[1] = 0
			}
			out := make([]float32, n)
			ReLU2(out, x)
			for i := range n {
				if v := max(x[i], 0); out[i] != v*v {
					t.Fatalf("ReLU2 n=%d [%d]: %v, want %v", n, i, out[i], v*v)
				}
			}
			ReLU2Grad(out, y, x)
			for i := range n {
				if w := y[i] * 2 * max(x[i], 0); out[i] != w {
					t.Fatalf("ReLU2Grad n=%d [%d]: %v, want %v", n, i, out[i], w)
				}
			}
			AXPBY(out, x, y, 0.75, -1.5)
			for i := range n {
				if w := 0.75*x[i] + -1.5*y[i]; out[i] != w {
					t.Fatalf("AXPBY n=%d [%d]: %v, want %v", n, i, out[i], w)
				}
			}
			c, s := rnd(n), rnd(n)
			r1, r2 := append([]float32(nil), x...), append([]float32(nil), y...)
			Rotate(r1, r2, c, s)
			for i := range n {
				if w1, w2 := x[i]*c[i]-y[i]*s[i], y[i]*c[i]+x[i]*s[i]; r1[i] != w1 || r2[i] != w2 {
					t.Fatalf("Rotate n=%d [%d]: (%v, %v), want (%v, %v)", n, i, r1[i], r2[i], w1, w2)
				}
			}
			sc := append([]float32(nil), x...)
			Scale(sc, -1.75)
			for i := range n {
				if w := x[i] * -1.75; sc[i] != w {
					t.Fatalf("Scale n=%d [%d]: %v, want %v", n, i, sc[i], w)
				}
			}
			MulSub(out, x, z, 0.25)
			for i := range n {
				if w := x[i] * (z[i] - 0.25); out[i] != w {
					t.Fatalf("MulSub n=%d [%d]: %v, want %v", n, i, out[i], w)
				}
			}
			// In place: the output over one of the inputs.
			in := append([]float32(nil), z...)
			MulSub(in, x, in, 0.25)
			for i := range n {
				if in[i] != out[i] {
					t.Fatalf("MulSub in place n=%d [%d]: %v, want %v", n, i, in[i], out[i])
				}
			}
			in = append([]float32(nil), x...)
			ReLU2(in, in)
			for i := range n {
				if v := max(x[i], 0); in[i] != v*v {
					t.Fatalf("ReLU2 in place n=%d [%d]: %v", n, i, in[i])
				}
			}
		}
	}
	t.Run("dispatch", run)
	r2, r2g, ab, ms, rot, scl := relu2Kernel, relu2GradKernel, axpbyKernel, mulSubKernel, rotateKernel, scaleKernel
	defer func() {
		relu2Kernel, relu2GradKernel, axpbyKernel, mulSubKernel, rotateKernel, scaleKernel = r2, r2g, ab, ms, rot, scl
	}()
	relu2Kernel, relu2GradKernel, axpbyKernel, mulSubKernel, rotateKernel, scaleKernel = nil, nil, nil, nil, nil, nil
	t.Run("generic", run)
}

func TestReductionsAndNorm(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	rnd := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64()) + 0.5
		}
		return v
	}
	near := func(what string, n int, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-12*(1+math.Abs(want)) {
			t.Fatalf("%s n=%d: %v, want %v", what, n, got, want)
		}
	}
	near32 := func(what string, n, i int, got, want float32) {
		t.Helper()
		if math.Abs(float64(got-want)) > 1e-6*(1+math.Abs(float64(want))) {
			t.Fatalf("%s n=%d [%d]: %v, want %v", what, n, i, got, want)
		}
	}
	run := func(t *testing.T) {
		for _, n := range []int{0, 1, 7, 8, 9, 23, 96, 101} {
			x, y, w, b, g := rnd(n), rnd(n), rnd(n), rnd(n), rnd(n)
			var sum, ssd, dot, dd float64
			mean := 0.3
			for i := range n {
				sum += float64(x[i])
				d := float64(x[i]) - mean
				ssd += d * d
				dot += float64(x[i] * y[i])
				dd += float64(w[i]) * (float64(x[i]) - float64(y[i]))
			}
			near("Sum", n, Sum(x), sum)
			near("SumSqDev", n, SumSqDev(x, mean), ssd)
			near("Dot", n, Dot(x, y), dot)
			near("DotDiff", n, DotDiff(w, x, y), dd)
			const m, rs = float32(0.25), float32(1.5)
			out := make([]float32, n)
			for _, bias := range [][]float32{b, nil} {
				Norm(out, x, w, bias, m, rs)
				for i := range n {
					want := (x[i] - m) * rs * w[i]
					if bias != nil {
						want += bias[i]
					}
					near32("Norm", n, i, out[i], want)
				}
			}
			xhat, dy := make([]float32, n), make([]float32, n)
			aw, ab := make([]float64, n), make([]float64, n)
			for i := range n {
				aw[i], ab[i] = 1, 2
			}
			NormGradIn(xhat, dy, x, g, w, aw, ab, m, rs)
			for i := range n {
				xh := (x[i] - m) * rs
				near32("NormGradIn xhat", n, i, xhat[i], xh)
				near32("NormGradIn dy", n, i, dy[i], g[i]*w[i])
				near("NormGradIn aw", n, aw[i], 1+float64(g[i]*xh))
				near("NormGradIn ab", n, ab[i], 2+float64(g[i]))
			}
			NormGradOut(out, dy, xhat, rs, 0.125, -0.5)
			for i := range n {
				near32("NormGradOut", n, i, out[i], rs*(dy[i]-0.125-xhat[i]*-0.5))
			}
		}
	}
	t.Run("dispatch", run)
	k1, k2, k3, k4, k5, k6, k7 := sumKernel, sumSqDevKernel, dotKernel, dotDiffKernel, normKernel, normGradInKernel, normGradOutKernel
	defer func() {
		sumKernel, sumSqDevKernel, dotKernel, dotDiffKernel, normKernel, normGradInKernel, normGradOutKernel = k1, k2, k3, k4, k5, k6, k7
	}()
	sumKernel, sumSqDevKernel, dotKernel, dotDiffKernel, normKernel, normGradInKernel, normGradOutKernel = nil, nil, nil, nil, nil, nil, nil
	t.Run("generic", run)
}

// TestExpPaths checks that the kernels' two ways of computing e^x agree
// bit for bit: pairs of vectors whose lanes are all at most 88 take a short
// path, others (a lane NaN or larger) the general one. Every block of 16
// below gets one NaN, and every other lane must come out as without it.
func TestExpPaths(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	x := make([]float32, 16*200)
	for i := range x {
		switch i % 4 {
		case 0: // the whole range and beyond its bottom
			x[i] = float32(r.Float64()*180 - 92)
		case 1:
			x[i] = float32(r.NormFloat64() * 3)
		case 2: // around the underflow bound
			x[i] = float32(minX + r.NormFloat64()*0.3)
		case 3: // where n reaches 127
			x[i] = float32(88 - r.Float64())
		}
	}
	x[5] = float32(math.Inf(-1))
	y := append([]float32(nil), x...)
	for k := 0; k < len(y); k += 16 {
		y[k+(k/16)%16] = float32(math.NaN())
	}
	for _, c := range []struct{ scale, shift float32 }{{1, 0}, {0.5, -2}} {
		ex, ey := make([]float32, len(x)), make([]float32, len(y))
		ExpSum(ex, x, c.scale, c.shift)
		ExpSum(ey, y, c.scale, c.shift)
		for i := range ex {
			if y[i] == y[i] && math.Float32bits(ex[i]) != math.Float32bits(ey[i]) {
				t.Fatalf("ExpSum %+v: e^(%v*%v-%v): %v on the short path, %v on the general one", c, x[i], c.scale, c.shift, ex[i], ey[i])
			}
		}
	}
	ex, ey := append([]float32(nil), x...), append([]float32(nil), y...)
	Exp(ex)
	Exp(ey)
	for i := range ex {
		if y[i] == y[i] && math.Float32bits(ex[i]) != math.Float32bits(ey[i]) {
			t.Fatalf("Exp: e^%v: %v on the short path, %v on the general one", x[i], ex[i], ey[i])
		}
	}
}
