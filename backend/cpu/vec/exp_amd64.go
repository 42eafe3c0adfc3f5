//go:build amd64 && !purego

package vec

import (
	"math"
	"os"
	"strings"

	"golang.org/x/sys/cpu"
)

//go:noescape
func expAVX512(p *float32, n int)

//go:noescape
func expAVX2(p *float32, n int)

//go:noescape
func expSumAVX2(dst, src *float32, n int, scale, shift float32, next *float32) float64

//go:noescape
func maxAVX2(p *float32, n int) float32

//go:noescape
func sumAVX2(v *float32, n int) float64

//go:noescape
func sumSqDevAVX2(v *float32, n int, mean float64) float64

//go:noescape
func dotAVX2(x, y *float32, n int) float64

//go:noescape
func dotDiffAVX2(w, x, y *float32, n int) float64

//go:noescape
func normAVX2(out, x, w, b *float32, n int, mean, rstd float32)

//go:noescape
func normGradInAVX2(xhat, dy, x, grad, w *float32, aw, ab *float64, n int, mean, rstd float32)

//go:noescape
func normGradOutAVX2(dx, dy, xhat *float32, n int, rstd, mdy, mdyx float32)

//go:noescape
func rotateAVX2(x1, x2, cos, sin *float32, n int)

//go:noescape
func relu2AVX2(out, x *float32, n int)

//go:noescape
func relu2GradAVX2(dx, dout, x *float32, n int)

//go:noescape
func axpbyAVX2(dst, x, y *float32, n int, a, b float32)

//go:noescape
func scaleAVX2(v *float32, n int, a float32)

//go:noescape
func mulSubAVX2(dst, p, d *float32, n int, c float32)

// expTab holds the constants of expAVX2 and expSumAVX2, each repeated in
// the 8 lanes of a vector, in the order of the T_ offsets of exp_amd64.s.
//
//lint:ignore U1000 read by the assembly of exp_amd64.s
var expTab = [...][8]float32{
	splat(log2e), splat(ln2Hi), splat(ln2Lo),
	splat(c6), splat(c5), splat(c4), splat(c3), splat(c2), splat(c1),
	splat(1), splat(maxX), splat(minX), splat(float32(math.Inf(1))),
	splat(math.Float32frombits(127)), // the exponent bias, an int32
	splat(127.5),                     // where n rounds to 128
	splat(88),                        // the fast path's bound: n ≤ 127
}

func splat(x float32) (v [8]float32) {
	for i := range v {
		v[i] = x
	}
	return v
}

func init() {
	level := strings.ToLower(os.Getenv("MINITRON_GEMM")) // the same switch as the matmul kernels
	switch {
	case level == "generic":
	case cpu.X86.HasAVX512F && level != "avx2":
		expKernel = func(v []float32) { expAVX512(&v[0], len(v)) }
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		expKernel = func(v []float32) { expAVX2(&v[0], len(v)) }
	}
	if level != "generic" && cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		expSumKernel = func(dst, src []float32, scale, shift float32, next []float32) float64 {
			pf := &src[0] // nothing to fetch: touch src, which is loaded anyway
			if len(next) > 0 {
				pf = &next[0]
			}
			return expSumAVX2(&dst[0], &src[0], len(src), scale, shift, pf)
		}
		maxKernel = func(v []float32) float32 { return maxAVX2(&v[0], len(v)) }
		sumKernel = func(v []float32) float64 { return sumAVX2(&v[0], len(v)) }
		sumSqDevKernel = func(v []float32, mean float64) float64 { return sumSqDevAVX2(&v[0], len(v), mean) }
		dotKernel = func(x, y []float32) float64 { return dotAVX2(&x[0], &y[0], len(x)) }
		dotDiffKernel = func(w, x, y []float32) float64 { return dotDiffAVX2(&w[0], &x[0], &y[0], len(w)) }
		normKernel = func(out, x, w, b []float32, mean, rstd float32) {
			var bp *float32
			if b != nil {
				bp = &b[0]
			}
			normAVX2(&out[0], &x[0], &w[0], bp, len(x), mean, rstd)
		}
		normGradInKernel = func(xhat, dy, x, g, w []float32, aw, ab []float64, mean, rstd float32) {
			normGradInAVX2(&xhat[0], &dy[0], &x[0], &g[0], &w[0], &aw[0], &ab[0], len(x), mean, rstd)
		}
		normGradOutKernel = func(dx, dy, xhat []float32, rstd, mdy, mdyx float32) {
			normGradOutAVX2(&dx[0], &dy[0], &xhat[0], len(dy), rstd, mdy, mdyx)
		}
		rotateKernel = func(x1, x2, cos, sin []float32) { rotateAVX2(&x1[0], &x2[0], &cos[0], &sin[0], len(x1)) }
		relu2Kernel = func(out, x []float32) { relu2AVX2(&out[0], &x[0], len(x)) }
		relu2GradKernel = func(dx, dout, x []float32) { relu2GradAVX2(&dx[0], &dout[0], &x[0], len(x)) }
		axpbyKernel = func(dst, x, y []float32, a, b float32) { axpbyAVX2(&dst[0], &x[0], &y[0], len(x), a, b) }
		mulSubKernel = func(dst, p, d []float32, c float32) { mulSubAVX2(&dst[0], &p[0], &d[0], len(p), c) }
		scaleKernel = func(v []float32, a float32) { scaleAVX2(&v[0], len(v), a) }
	}
}
