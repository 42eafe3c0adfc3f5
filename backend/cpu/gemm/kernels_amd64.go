//go:build amd64 && !purego

package gemm

import "golang.org/x/sys/cpu"

//go:noescape
func kernelAVX512(kc int, a, b, c *float32, ldc int)

//go:noescape
func kernelAVX2(kc int, a, b, c *float32, ldc int)

//go:noescape
func dot4AVX512(n int, a, b *float32, ldb int, out *float32)

//go:noescape
func dot4AVX2(n int, a, b *float32, ldb int, out *float32)

//go:noescape
func dotRowsAVX512(n int, a, b *float32, ldb int, rows int, out *float32)

//go:noescape
func dotRowsAVX2(n int, a, b *float32, ldb int, rows int, out *float32)

func init() {
	switch {
	case cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && !forceGeneric("avx512"):
		arch = archImpl{
			name: "avx512", mr: 12, nr: 32, lanes: 16,
			kernel: func(kc int, a, b, c []float32, ldc int) { kernelAVX512(kc, &a[0], &b[0], &c[0], ldc) },
			dot4:   func(n int, a, b []float32, ldb int, out []float32) { dot4AVX512(n, &a[0], &b[0], ldb, &out[0]) },
			dotRows: func(n int, a, b []float32, ldb, rows int, out []float32) {
				dotRowsAVX512(n, &a[0], &b[0], ldb, rows, &out[0])
			},
		}
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA && !forceGeneric("avx2"):
		arch = archImpl{
			name: "avx2", mr: 6, nr: 16, lanes: 8,
			kernel: func(kc int, a, b, c []float32, ldc int) { kernelAVX2(kc, &a[0], &b[0], &c[0], ldc) },
			dot4:   func(n int, a, b []float32, ldb int, out []float32) { dot4AVX2(n, &a[0], &b[0], ldb, &out[0]) },
			dotRows: func(n int, a, b []float32, ldb, rows int, out []float32) {
				dotRowsAVX2(n, &a[0], &b[0], ldb, rows, &out[0])
			},
		}
	}
}
