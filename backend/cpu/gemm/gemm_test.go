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
		impls = append(impls, generic)
	}
	if avx2x12.kernel != nil {
		impls = append(impls, avx2x12)
	}
	return impls
}

func TestSgemm(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	shapes := [][3]int{{1, 1, 1}, {1, 7, 5}, {3, 100, 70}, {2, 33, 64}, {5, 64, 300}, {13, 33, 17}, {12, 32, 256}, {37, 71, 300}, {150, 40, 600}, {200, 2100, 9}, {20, 700, 300}, {64, 64, 0}}
	saved := arch
	defer func() { arch = saved }()
	for _, impl := range kernels(t) {
		arch = impl
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

func TestMulPanels(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	saved := arch
	defer func() { arch = saved }()
	for _, impl := range kernels(t) {
		arch = impl
		for _, s := range [][5]int{{1, 1, 1, 1, 1}, {7, 5, 9, 9, 5}, {64, 32, 100, 64, 40}, {13, 33, 300, 300, 33}, {30, 7, 40, 0, 10}} {
			m, n, kp, k, np := s[0], s[1], s[2], s[3], s[4] // panels of depth kp and width np, used to depth k and width n
			for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
				for _, acc := range []bool{false, true} {
					t.Run(fmt.Sprintf("%s/%dx%dx%d/of%dx%d/tA=%v/tB=%v/acc=%v", impl.name, m, n, k, kp, np, tr[0], tr[1], acc), func(t *testing.T) {
						lda, ldb, ldc := k+2, np+3, n+1
						if tr[0] {
							lda = m + 2
						}
						if tr[1] {
							ldb = kp + 3
						}
						a := randSlice(r, max(m, k)*lda+1)
						b := randSlice(r, max(np, kp)*ldb+1)
						c := randSlice(r, m*ldc)
						var p Panels
						p.Pack(tr[1], kp, np, b, ldb)
						beta := float32(0)
						if acc {
							beta = 1
						}
						want := ref(tr[0], tr[1], m, n, k, 0.75, a, lda, b, ldb, beta, c, ldc)
						MulPanels(tr[0], m, n, k, 0.75, a, lda, &p, acc, c, ldc)
						for i := range m {
							for j := range n {
								got, w := float64(c[i*ldc+j]), want[i*n+j]
								if math.Abs(got-w) > 1e-4*(1+math.Abs(w)) {
									t.Fatalf("C[%d,%d] = %v, want %v", i, j, got, w)
								}
							}
						}
					})
				}
			}
		}
	}
}

func TestCopyRowsAndTranspose(t *testing.T) {
	if copyRows == nil {
		t.Skip("no assembly copies on this machine")
	}
	r := rand.New(rand.NewPCG(5, 6))
	for _, w := range []int{6, 12, 16, 32} {
		for _, rows := range []int{0, 1, 7} {
			src := randSlice(r, 7*(w+5))
			dst := make([]float32, 7*(w+3))
			if !copyRows(w, dst, w+3, src, w+5, rows) {
				t.Fatalf("width %d not copied", w)
			}
			for i := range 7 {
				for j := range w + 3 {
					want := float32(0)
					if i < rows && j < w {
						want = src[i*(w+5)+j]
					}
					if dst[i*(w+3)+j] != want {
						t.Fatalf("width %d, %d rows: dst[%d][%d] = %v, want %v", w, rows, i, j, dst[i*(w+3)+j], want)
					}
				}
			}
		}
	}
	if copyRows(5, nil, 0, nil, 0, 0) {
		t.Fatal("width 5 claimed")
	}
	for _, k := range []int{8, 13, 24} {
		src := randSlice(r, 8*(k+3))
		dst := make([]float32, k*10)
		transpose(dst, 10, src, k+3, k)
		for p := range k {
			for q := range 10 {
				want := float32(0)
				if q < 8 && p < k&^7 {
					want = src[q*(k+3)+p]
				}
				if dst[p*10+q] != want {
					t.Fatalf("k=%d: dst[%d][%d] = %v, want %v", k, p, q, dst[p*10+q], want)
				}
			}
		}
	}
}
