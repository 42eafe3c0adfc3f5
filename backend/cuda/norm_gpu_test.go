package cuda

import (
	"math/rand/v2"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
)

// TestGPUNormFloat32Rows runs the norms on float32 tensors, whose rows
// move as pairs of 16-byte accesses (the conformance suite's are bf16),
// against the CPU backend: d = 64 and 72 take the vector path, 70 and a
// row offset by one element do not. Only float32 rounding separates the
// two, hence 1e-5.
func TestGPUNormFloat32Rows(t *testing.T) {
	g := openGPU(t)
	c := cpu.New()
	r := rand.New(rand.NewPCG(5, 6))
	for _, s := range []struct{ n, d, skip int }{{3, 64, 0}, {5, 72, 0}, {4, 70, 0}, {3, 64, 1}} {
		vals := func(k int) []float32 {
			v := make([]float32, k)
			for i := range v {
				v[i] = float32(r.NormFloat64())
			}
			return v
		}
		x, w, dout := vals(s.n*s.d+s.skip), vals(s.d), vals(s.n*s.d)
		run := func(be backend.Backend) [][]float32 {
			up := func(v []float32, shape ...int) backend.Tensor {
				t1, err := be.New(backend.F32, shape...)
				if err != nil {
					t.Fatal(err)
				}
				if err := be.Write(t1, v); err != nil {
					t.Fatal(err)
				}
				return t1
			}
			xa := up(x, s.n*s.d+s.skip)
			xt, err := be.View(xa, s.skip, s.n, s.d) // a row start off the 16-byte grid when skip is 1
			if err != nil {
				t.Fatal(err)
			}
			wt, gt := up(w, s.d), up(dout, s.n, s.d)
			var res [][]float32
			for kind := range 2 {
				out, _ := be.New(backend.F32, s.n, s.d)
				dx, _ := be.New(backend.F32, s.n, s.d)
				dw, _ := be.New(backend.F32, s.d)
				var err error
				if kind == 0 {
					stats, _ := be.New(backend.F32, s.n, 2)
					if err = be.LayerNorm(out, stats, xt, wt, nil, 1e-5, 1); err == nil {
						err = be.LayerNormBackward(dx, dw, nil, gt, xt, wt, stats, 1)
					}
				} else {
					stats, _ := be.New(backend.F32, s.n)
					if err = be.RMSNorm(out, stats, xt, wt, 1e-5); err == nil {
						err = be.RMSNormBackward(dx, dw, gt, xt, wt, stats)
					}
				}
				if err != nil {
					t.Fatal(err)
				}
				for _, x := range []backend.Tensor{out, dx, dw} {
					v, err := be.ToFloat32(x)
					if err != nil {
						t.Fatal(err)
					}
					res = append(res, v)
				}
			}
			return res
		}
		got, want := run(g), run(c)
		for i := range want {
			if e := relErr(got[i], want[i]); !(e < 1e-5) {
				t.Errorf("n=%d d=%d skip=%d: result %d (LayerNorm out, dx, dw; RMSNorm out, dx, dw): relative error %.3g", s.n, s.d, s.skip, i, e)
			}
		}
	}
}
