//go:build amd64 && !purego

package gemm

import "golang.org/x/sys/cpu"

//go:noescape
func kernelAVX512(kc int, a *float32, rs, ks int, b *float32, bp int, c *float32, ldc int, alpha float32, acc, panels int)

//go:noescape
func kernelAVX2(kc int, a *float32, rs, ks int, b *float32, bp int, c *float32, ldc int, alpha float32, acc, panels int)

//go:noescape
func kernelAVX2x12(kc int, a *float32, rs, ks int, b *float32, bp int, c *float32, ldc int, alpha float32, acc, panels int)

//go:noescape
func copyRows6(dst *float32, ds int, src *float32, ss, rows int)

//go:noescape
func copyRows12(dst *float32, ds int, src *float32, ss, rows int)

//go:noescape
func copyRows16(dst *float32, ds int, src *float32, ss, rows int)

//go:noescape
func copyRows32(dst *float32, ds int, src *float32, ss, rows int)

//go:noescape
func transpose8(dst *float32, ds int, src *float32, ss, k int)

//go:noescape
func dotRowsAVX512(n int, a, b *float32, ldb int, rows int, out *float32)

//go:noescape
func dotRowsAVX2(n int, a, b *float32, ldb int, rows int, out *float32)

// asmKernel wraps an assembly micro-kernel of mr×nr with the bounds checks
// that keep it inside its slices.
func asmKernel(mr, nr int, k func(kc int, a *float32, rs, ks int, b *float32, bp int, c *float32, ldc int, alpha float32, acc, panels int)) kernelFunc {
	return func(kc int, a []float32, rs, ks int, b []float32, bp int, c []float32, ldc int, alpha float32, acc bool, panels int) {
		_ = a[(mr-1)*rs+(kc-1)*ks]
		_ = b[(panels-1)*bp+kc*nr-1]
		_ = c[(mr-1)*ldc+panels*nr-1]
		k(kc, &a[0], rs, ks, &b[0], bp, &c[0], ldc, alpha, b2i(acc), panels)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func init() {
	if cpu.X86.HasAVX {
		copyRows = func(w int, dst []float32, ds int, src []float32, ss, rows int) bool {
			var f func(dst *float32, ds int, src *float32, ss, rows int)
			switch w {
			case 6:
				f = copyRows6
			case 12:
				f = copyRows12
			case 16:
				f = copyRows16
			case 32:
				f = copyRows32
			default:
				return false
			}
			if rows == 0 {
				return true
			}
			_ = dst[(rows-1)*ds+w-1]
			_ = src[(rows-1)*ss+w-1]
			f(&dst[0], ds, &src[0], ss, rows)
			return true
		}
		transpose = func(dst []float32, ds int, src []float32, ss, k int) {
			if k < 8 {
				return
			}
			_ = dst[(k-1)*ds+7]
			_ = src[7*ss+k-1]
			transpose8(&dst[0], ds, &src[0], ss, k)
		}
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		avx2x12 = archImpl{name: "avx2x12", mr: 12, nr: 8, lanes: 8, kernel: asmKernel(12, 8, kernelAVX2x12)}
	}
	switch {
	case cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && !forceGeneric("avx512"):
		arch = archImpl{
			name: "avx512", mr: 12, nr: 32, lanes: 16,
			kernel: asmKernel(12, 32, kernelAVX512),
			dotRows: func(n int, a, b []float32, ldb, rows int, out []float32) {
				dotRowsAVX512(n, &a[0], &b[0], ldb, rows, &out[0])
			},
		}
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA && !forceGeneric("avx2"):
		arch = archImpl{
			name: "avx2", mr: 6, nr: 16, lanes: 8,
			kernel: asmKernel(6, 16, kernelAVX2),
			dotRows: func(n int, a, b []float32, ldb, rows int, out []float32) {
				dotRowsAVX2(n, &a[0], &b[0], ldb, rows, &out[0])
			},
		}
	}
}
