package cuda_test

import (
	"math"
	"slices"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cuda"
)

// TestGPUAdamWNoise: AdamW steps far below one bfloat16 unit of the
// weights move bfloat16 weights only through stochastic rounding. Two
// tensors of the same shape with the same values and gradient, updated in
// the same step, get independent rounding noise when their ids differ and
// identical results when they are the same, also when the tensor is
// updated in parts with their offsets; on average the rounding is
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
	// update runs the step on the tensor whole, or, given cuts, on views
	// of its parts between them, each with its offset (as data-parallel
	// shards do).
	update := func(seed uint32, cuts ...int) []float32 {
		t.Helper()
		w, err := b.FromFloat32(append([]float32(nil), w0...), n)
		if err != nil {
			t.Fatal(err)
		}
		gt, _ := b.FromFloat32(append([]float32(nil), g...), n)
		m, _ := b.New(backend.F32, n)
		v, _ := b.New(backend.F32, n)
		defer func() { b.Free(w); b.Free(gt); b.Free(m); b.Free(v) }()
		bounds := append(append([]int{0}, cuts...), n)
		for k := range len(bounds) - 1 {
			lo, hi := bounds[k], bounds[k+1]
			var xs [4]backend.Tensor
			for i, x := range []backend.Tensor{w, gt, m, v} {
				if xs[i], err = b.View(x, lo, hi-lo); err != nil {
					t.Fatal(err)
				}
			}
			q := p
			q.Seed, q.Offset = seed, lo
			if err := b.AdamW(xs[0], xs[1], xs[2], xs[3], q); err != nil {
				t.Fatal(err)
			}
		}
		out, err := b.ToFloat32(w)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, a2, c := update(0), update(0), update(1)
	for _, cut := range []int{n / 2, 1000} {
		if pa := update(0, cut); !slices.Equal(pa, a) {
			i := 0
			for pa[i] == a[i] {
				i++
			}
			t.Errorf("updated in parts cut at %d: element %d is %v, updated whole %v", cut, i, pa[i], a[i])
		}
	}
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

// benchGPU opens the GPU for a benchmark, or skips it without one.
func benchGPU(b *testing.B) *cuda.Backend {
	b.Helper()
	if err := cuda.Available(); err != nil {
		b.Skipf("no usable GPU: %v", err)
	}
	be, err := cuda.Open(cuda.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	return be
}

// BenchmarkGPUOptimizer measures the optimizer's device work per step on
// 64M parameters, against a device-to-device copy of the same tensors
// (the anchor: the memory bandwidth an elementwise pass can reach):
//
//	copy     Copy of a float32 tensor (8 bytes moved per element)
//	bf16     AdamW on bf16 weights, gradients and moments in place
//	         (all-bf16 mode: 16 bytes per element)
//	master   AdamW on float32 master weights, gradients and moments, then
//	         the bf16 copy refreshed (the default: 34 bytes per element)
//	norm     the squared norm of the gradients, 256 tensors, read once
//
// Each reports GB/s of the bytes it must move; `go test ./backend/cuda
// -run - -bench GPUOptimizer` on a GPU machine.
func BenchmarkGPUOptimizer(b *testing.B) {
	be := benchGPU(b)
	const n = 64 << 20
	mk := func(dt backend.DType) backend.Tensor {
		x, err := be.New(dt, n)
		if err != nil {
			b.Fatal(err)
		}
		return x
	}
	p := backend.AdamW{LR: 1e-4, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, Step: 1, GradScale: 1}
	cases := []struct {
		name  string
		bytes int64
		setup func() func() error
	}{
		{"copy", 8 * n, func() func() error {
			x, y := mk(backend.F32), mk(backend.F32)
			return func() error { return be.Copy(y, x) }
		}},
		{"bf16", 16 * n, func() func() error {
			w, g, m, v := mk(backend.BF16), mk(backend.BF16), mk(backend.BF16), mk(backend.BF16)
			return func() error { return be.AdamW(w, g, m, v, p) }
		}},
		{"master", 34 * n, func() func() error {
			w, master, g, m, v := mk(backend.BF16), mk(backend.F32), mk(backend.F32), mk(backend.F32), mk(backend.F32)
			return func() error {
				if err := be.AdamW(master, g, m, v, p); err != nil {
					return err
				}
				return be.Copy(w, master)
			}
		}},
		{"norm", 4 * n, func() func() error {
			g := mk(backend.F32)
			var parts []backend.Tensor
			for i := range 256 {
				v, err := be.View(g, i*(n/256), n/256)
				if err != nil {
					b.Fatal(err)
				}
				parts = append(parts, v)
			}
			return func() error { _, err := be.SquaredNorm(parts...); return err }
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			f := c.setup()
			if err := f(); err != nil {
				b.Fatal(err)
			}
			be.Sync()
			b.ResetTimer()
			for range b.N {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
			if err := be.Sync(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(c.bytes)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
	}
}

// BenchmarkGPUSubULPUpdates measures what the end of a cosine schedule
// does to bfloat16 weights: 1000 AdamW steps at the Minitron-4B recipe's
// final learning rate (4.5e-7, about 1/135 of a bf16 unit at 0.01) on 64K
// weights between 0.01 and 0.02 with a fixed random gradient, (a) on bf16
// weights updated in place with stochastic rounding (all-bf16) and (b) on
// float32 master weights whose bf16 copy is refreshed. It reports the
// relative error of the total movement of the bf16 weights against the
// movement the same steps make in float64:
//
//	go test ./backend/cuda -run - -bench GPUSubULPUpdates -benchtime 1x
func BenchmarkGPUSubULPUpdates(b *testing.B) {
	be := benchGPU(b)
	const n, steps, lr = 1 << 16, 1000, 4.5e-7
	w0, g := make([]float32, n), make([]float32, n)
	for i := range w0 {
		w0[i] = backend.BF16ToF32(backend.F32ToBF16(0.01 + 0.01*float32(i%97)/97))
		g[i] = float32(math.Sin(float64(i)*0.7)) * 0.01
	}
	// The float64 reference of the same steps.
	want := make([]float64, n)
	{
		w := make([]float64, n)
		m, v := make([]float64, n), make([]float64, n)
		for i := range w {
			w[i] = float64(w0[i])
		}
		for s := 1; s <= steps; s++ {
			bc1, bc2 := 1-math.Pow(0.9, float64(s)), 1-math.Pow(0.95, float64(s))
			for i := range w {
				gi := float64(g[i])
				m[i] = 0.9*m[i] + 0.1*gi
				v[i] = 0.95*v[i] + 0.05*gi*gi
				w[i] -= lr / bc1 * m[i] / (math.Sqrt(v[i])/math.Sqrt(bc2) + 1e-8)
			}
		}
		for i := range w {
			want[i] = w[i] - float64(w0[i])
		}
	}
	run := func(master bool) float64 {
		w, _ := be.FromFloat32(append([]float32(nil), w0...), n)
		gt, _ := be.New(backend.F32, n)
		be.Write(gt, g)
		dt := backend.BF16
		var mw backend.Tensor
		if master {
			dt = backend.F32
			mw, _ = be.New(backend.F32, n)
			be.Copy(mw, w)
		}
		m, _ := be.New(dt, n)
		v, _ := be.New(dt, n)
		for s := 1; s <= steps; s++ {
			p := backend.AdamW{LR: lr, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, Step: s, GradScale: 1, Seed: 7}
			target := w
			if master {
				target = mw
			}
			if err := be.AdamW(target, gt, m, v, p); err != nil {
				b.Fatal(err)
			}
			if master {
				be.Copy(w, mw)
			}
		}
		// (b) is judged by its master weights, from which training
		// continues (the bf16 copy is their rounding).
		final := w
		if master {
			final = mw
		}
		got, err := be.ToFloat32(final)
		if err != nil {
			b.Fatal(err)
		}
		var num, den float64
		for i := range got {
			d := float64(got[i]) - float64(w0[i]) - want[i]
			num += d * d
			den += want[i] * want[i]
		}
		return math.Sqrt(num / den)
	}
	for range b.N {
		b.ReportMetric(100*run(false), "%err-bf16")
		b.ReportMetric(100*run(true), "%err-master")
	}
}
