package gemm

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// ref computes alpha*op(A)*op(B) + beta*C in float64.
func ref(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) []float64 {
	out := make([]float64, m*n)
	for i := range m {
		for j := range n {
			var s float64
			for p := range k {
				av := a[i*lda+p]
				if transA {
					av = a[p*lda+i]
				}
				bv := b[p*ldb+j]
				if transB {
					bv = b[j*ldb+p]
				}
				s += float64(av) * float64(bv)
			}
			out[i*n+j] = float64(alpha)*s + float64(beta)*float64(c[i*ldc+j])
		}
	}
	return out
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

func kernels(t *testing.T) []archImpl {
	// Every kernel this machine can run, plus the portable one.
	impls := []archImpl{arch}
	if arch.name != "generic" {
		impls = append(impls, archImpl{name: "generic", mr: 4, nr: 8, kernel: kernelGeneric})
	}
	return impls
}

func TestSgemm(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	shapes := [][3]int{{1, 1, 1}, {1, 7, 5}, {3, 100, 70}, {2, 33, 64}, {5, 64, 300}, {13, 33, 17}, {12, 32, 256}, {37, 71, 300}, {150, 40, 600}, {200, 2100, 9}, {64, 64, 0}}
	saved := arch
	defer func() { arch = saved }()
	for _, impl := range kernels(t) {
		arch = impl
		pool.New = func() any {
			return &workspace{a: make([]float32, (mc+arch.mr)*kc), b: make([]float32, kc*(nc+arch.nr)), tile: make([]float32, arch.mr*arch.nr)}
		}
		for _, s := range shapes {
			for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
				for _, ab := range [][2]float32{{1, 0}, {0.5, 1}, {-2, 0.25}} {
					m, n, k := s[0], s[1], s[2]
					name := fmt.Sprintf("%s/%dx%dx%d/tA=%v/tB=%v/alpha=%v/beta=%v", impl.name, m, n, k, tr[0], tr[1], ab[0], ab[1])
					t.Run(name, func(t *testing.T) {
						lda, ldb, ldc := k+3, n+1, n+2
						if tr[0] {
							lda = m + 3
						}
						if tr[1] {
							ldb = k + 1
						}
						a := randSlice(r, max(m, k)*lda+1)
						b := randSlice(r, max(n, k)*ldb+1)
						c := randSlice(r, m*ldc)
						orig := slices.Clone(c)
						want := ref(tr[0], tr[1], m, n, k, ab[0], a, lda, b, ldb, ab[1], c, ldc)
						Sgemm(tr[0], tr[1], m, n, k, ab[0], a, lda, b, ldb, ab[1], c, ldc)
						for i := range m {
							for j := range n {
								got, w := float64(c[i*ldc+j]), want[i*n+j]
								// float32 accumulation over k terms of unit-variance products:
								// error grows like sqrt(k)*eps*|terms|.
								tol := 1e-5 * (1 + math.Sqrt(float64(k))) * 4
								if math.Abs(got-w) > tol*(1+math.Abs(w)) {
									t.Fatalf("C[%d,%d] = %v, want %v", i, j, got, w)
								}
							}
							for j := n; j < ldc; j++ { // padding beyond n untouched
								if p := i*ldc + j; c[p] != orig[p] {
									t.Fatalf("padding C[%d,%d] written: %v, was %v", i, j, c[p], orig[p])
								}
							}
						}
					})
				}
			}
		}
	}
}

func TestBetaZeroClearsNaN(t *testing.T) {
	c := []float32{float32(math.NaN()), float32(math.Inf(1))}
	Sgemm(false, false, 1, 2, 1, 1, []float32{2}, 1, []float32{3, 4}, 2, 0, c, 2)
	if c[0] != 6 || c[1] != 8 {
		t.Fatalf("got %v, want [6 8]", c)
	}
}

func benchSgemm(bm *testing.B, m, n, k int, transB bool) {
	r := rand.New(rand.NewPCG(1, 2))
	a := randSlice(r, m*k)
	b := randSlice(r, n*k)
	c := make([]float32, m*n)
	ldb := n
	if transB {
		ldb = k
	}
	bm.ResetTimer()
	for range bm.N {
		Sgemm(false, transB, m, n, k, 1, a, k, b, ldb, 0, c, n)
	}
	bm.ReportMetric(2*float64(m)*float64(n)*float64(k)*float64(bm.N)/bm.Elapsed().Seconds()/1e9, "GFLOP/s")
}

func BenchmarkSgemm1024(b *testing.B)       { benchSgemm(b, 1024, 1024, 1024, false) }
func BenchmarkSgemm1024T(b *testing.B)      { benchSgemm(b, 1024, 1024, 1024, true) }
func BenchmarkLinear2048x1536(b *testing.B) { benchSgemm(b, 2048, 1536, 512, true) }
func BenchmarkGemv512x8192(b *testing.B)    { benchSgemm(b, 1, 8192, 512, true) }

// BenchmarkGemvStream runs x·Wᵀ over the weight matrices of the standard
// 26M-parameter model in decode order (105 MB in float32, more than the
// last-level cache), as one decoded token does.
func BenchmarkGemvStream(bm *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	type mat struct{ n, k int }
	var shapes []mat
	for range 8 {
		shapes = append(shapes, mat{512, 512}, mat{128, 512}, mat{128, 512}, mat{512, 512}, mat{1536, 512}, mat{512, 1536})
	}
	shapes = append(shapes, mat{8192, 512})
	var ws [][]float32
	bytes := 0
	for _, s := range shapes {
		ws = append(ws, randSlice(r, s.n*s.k))
		bytes += 4 * s.n * s.k
	}
	x := randSlice(r, 1536)
	y := make([]float32, 8192)
	bm.SetBytes(int64(bytes))
	bm.ResetTimer()
	for range bm.N {
		for i, s := range shapes {
			Sgemm(false, true, 1, s.n, s.k, 1, x, s.k, ws[i], s.k, 0, y, s.n)
		}
	}
}
