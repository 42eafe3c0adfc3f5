// Package gemm is the float32 matrix multiply of the CPU backend: cache-blocked
// (BLIS-style packing of A and B panels), parallel over cores, with an
// assembly FMA micro-kernel (AVX-512 or AVX2, chosen at run time) and a pure
// Go fallback.
package gemm

import (
	"os"
	"runtime"
	"strings"
	"sync"
)

// archImpl is one micro-kernel family.
type archImpl struct {
	name   string
	mr, nr int // micro-tile rows and columns
	lanes  int // float32 lanes per vector register
	// kernel computes C[mr×nr] += Apanel·Bpanel for packed panels of depth kc.
	kernel func(kc int, a, b, c []float32, ldc int)
	// dot4 writes lane partial sums of a[:n]·b[r*ldb:][:n], r=0..3, to out[r*lanes:];
	// n is a multiple of 2*lanes.
	dot4 func(n int, a, b []float32, ldb int, out []float32)
	// dotRows writes out[r] = a[:n]·b[r*ldb:][:n] for r < rows; n is a
	// multiple of 4*lanes.
	dotRows func(n int, a, b []float32, ldb, rows int, out []float32)
}

var arch = archImpl{name: "generic", mr: 4, nr: 8, kernel: kernelGeneric}

// forceGeneric lets MINITRON_GEMM=generic|avx2 cap the kernel choice, for
// testing every path on one machine.
func forceGeneric(level string) bool {
	v := strings.ToLower(os.Getenv("MINITRON_GEMM"))
	switch v {
	case "generic":
		return true
	case "avx2":
		return level == "avx512"
	}
	return false
}

// Kernel names the micro-kernel in use ("avx512", "avx2" or "generic").
func Kernel() string { return arch.name }

// Cache blocking: a kc×nr panel of B and an mr×kc panel of A are the
// micro-kernel's working set; mc×kc of A stays in L2 across the nc columns.
const (
	kc = 256
	mc = 144
	nc = 2048
)

// Sgemm computes C = alpha*op(A)*op(B) + beta*C for row-major matrices, where
// op(A) is m×k, op(B) is k×n and C is m×n with row stride ldc. op(X) is X, or
// Xᵀ when trans is set: A is then stored k×m with row stride lda. It runs on
// up to GOMAXPROCS goroutines.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	sgemm(runtime.GOMAXPROCS(0), transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// Serial is Sgemm on the calling goroutine only, for callers that already
// run one multiply per core.
func Serial(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	sgemm(1, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func sgemm(workers int, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	scaleC(m, n, beta, c, ldc)
	if k == 0 || alpha == 0 {
		return
	}
	if !transA && transB && m < arch.mr/2 && arch.dotRows != nil {
		gemvT(workers, m, n, k, alpha, a, lda, b, ldb, c, ldc)
		return
	}
	if flops := m * n * k; flops < 64*64*64 {
		workers = 1
	}
	// Split the larger dimension (in micro-tiles) across workers.
	mt, nt := ceilDiv(m, arch.mr), ceilDiv(n, arch.nr)
	if workers > 1 && nt >= mt || workers > mt {
		parts := split(nt, workers)
		parallel(len(parts)-1, func(w int) {
			j0, j1 := parts[w]*arch.nr, min(parts[w+1]*arch.nr, n)
			blocked(transA, transB, m, j1-j0, k, alpha, a, lda, offsetB(b, ldb, transB, j0), ldb, c[j0:], ldc)
		})
		return
	}
	parts := split(mt, workers)
	parallel(len(parts)-1, func(w int) {
		i0, i1 := parts[w]*arch.mr, min(parts[w+1]*arch.mr, m)
		blocked(transA, transB, i1-i0, n, k, alpha, offsetA(a, lda, transA, i0), lda, b, ldb, c[i0*ldc:], ldc)
	})
}

func offsetA(a []float32, lda int, trans bool, i0 int) []float32 {
	if trans {
		return a[i0:]
	}
	return a[i0*lda:]
}

func offsetB(b []float32, ldb int, trans bool, j0 int) []float32 {
	if trans {
		return b[j0*ldb:]
	}
	return b[j0:]
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// split divides n units into at most w nearly equal, non-empty parts and
// returns the part boundaries.
func split(n, w int) []int {
	w = max(1, min(w, n))
	b := make([]int, w+1)
	for i := range b {
		b[i] = i * n / w
	}
	return b
}

// parallel runs f(0..n-1), f(0) on the caller and the rest on the pool's
// long-lived workers, and waits for all of them.
func parallel(n int, f func(i int)) {
	if n == 1 {
		f(0)
		return
	}
	var wg sync.WaitGroup
	wg.Add(n - 1)
	for i := 1; i < n; i++ {
		work <- task{f: f, i: i, wg: &wg}
	}
	f(0)
	wg.Wait()
}

type task struct {
	f  func(int)
	i  int
	wg *sync.WaitGroup
}

// work feeds the worker goroutines, started once; goroutines per call cost
// more than a small matrix-vector product (decode runs ~50 per token).
var work = func() chan task {
	c := make(chan task, 64)
	for range max(1, runtime.NumCPU()-1) * 2 {
		go func() {
			for t := range c {
				t.f(t.i)
				t.wg.Done()
			}
		}()
	}
	return c
}()

func scaleC(m, n int, beta float32, c []float32, ldc int) {
	if beta == 1 {
		return
	}
	for i := range m {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}

type workspace struct {
	a, b []float32
	tile []float32
}

var pool = sync.Pool{New: func() any {
	return &workspace{
		a:    make([]float32, (mc+arch.mr)*kc),
		b:    make([]float32, kc*(nc+arch.nr)),
		tile: make([]float32, arch.mr*arch.nr),
	}
}}

// blocked runs the packed, cache-blocked loops on one goroutine: C += alpha*op(A)*op(B).
func blocked(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	ws := pool.Get().(*workspace)
	defer pool.Put(ws)
	mr, nr := arch.mr, arch.nr
	for j0 := 0; j0 < n; j0 += nc {
		nb := min(nc, n-j0)
		for p0 := 0; p0 < k; p0 += kc {
			kb := min(kc, k-p0)
			packB(ws.b, b, ldb, transB, p0, kb, j0, nb, nr)
			for i0 := 0; i0 < m; i0 += mc {
				mb := min(mc, m-i0)
				packA(ws.a, a, lda, transA, i0, mb, p0, kb, mr, alpha)
				for ir := 0; ir < mb; ir += mr {
					ap := ws.a[ir*kb:]
					rows := min(mr, mb-ir)
					for jr := 0; jr < nb; jr += nr {
						bp := ws.b[jr*kb:]
						cols := min(nr, nb-jr)
						cij := c[(i0+ir)*ldc+j0+jr:]
						if rows == mr && cols == nr {
							arch.kernel(kb, ap, bp, cij, ldc)
							continue
						}
						t := ws.tile
						clear(t)
						arch.kernel(kb, ap, bp, t, nr)
						for r := range rows {
							dst := cij[r*ldc : r*ldc+cols]
							for q, v := range t[r*nr : r*nr+cols] {
								dst[q] += v
							}
						}
					}
				}
			}
		}
	}
}

// packA copies alpha*op(A)[i0:i0+mb, p0:p0+kb] into micro-panels of mr rows,
// each stored k-major (mr values per k), zero-padding the last panel.
func packA(dst, a []float32, lda int, trans bool, i0, mb, p0, kb, mr int, alpha float32) {
	for ir := 0; ir < mb; ir += mr {
		panel := dst[ir*kb : ir*kb+mr*kb]
		rows := min(mr, mb-ir)
		if rows < mr {
			clear(panel)
		}
		if trans {
			// op(A) row i is column i of A: walk A's rows, reading the
			// panel's rows contiguously.
			for p := range kb {
				src := a[(p0+p)*lda+i0+ir : (p0+p)*lda+i0+ir+rows]
				dst := panel[p*mr : p*mr+rows]
				if alpha == 1 {
					copy(dst, src)
					continue
				}
				for r, v := range src {
					dst[r] = alpha * v
				}
			}
			continue
		}
		if rows == mr && mr == 12 {
			packRows12(panel, a, lda, i0+ir, p0, kb, alpha)
			continue
		}
		for r := range rows {
			i := i0 + ir + r
			src := a[i*lda+p0 : i*lda+p0+kb]
			for p, v := range src {
				panel[p*mr+r] = alpha * v
			}
		}
	}
}

// packRows12 interleaves 12 rows of A, k-major: it reads the 12 rows in
// lockstep and writes the panel sequentially.
func packRows12(panel, a []float32, lda, i, p0, kb int, alpha float32) {
	var rows [12][]float32
	for r := range rows {
		rows[r] = a[(i+r)*lda+p0 : (i+r)*lda+p0+kb]
	}
	for p := range kb {
		d := panel[p*12 : p*12+12 : p*12+12]
		d[0], d[1], d[2], d[3] = alpha*rows[0][p], alpha*rows[1][p], alpha*rows[2][p], alpha*rows[3][p]
		d[4], d[5], d[6], d[7] = alpha*rows[4][p], alpha*rows[5][p], alpha*rows[6][p], alpha*rows[7][p]
		d[8], d[9], d[10], d[11] = alpha*rows[8][p], alpha*rows[9][p], alpha*rows[10][p], alpha*rows[11][p]
	}
}

// packB copies op(B)[p0:p0+kb, j0:j0+nb] into micro-panels of nr columns,
// each stored k-major (nr values per k), zero-padding the last panel.
func packB(dst, b []float32, ldb int, trans bool, p0, kb, j0, nb, nr int) {
	for jr := 0; jr < nb; jr += nr {
		panel := dst[jr*kb : jr*kb+nr*kb]
		cols := min(nr, nb-jr)
		if cols < nr {
			clear(panel)
		}
		if trans {
			for q := range cols {
				src := b[(j0+jr+q)*ldb+p0 : (j0+jr+q)*ldb+p0+kb]
				for p, v := range src {
					panel[p*nr+q] = v
				}
			}
			continue
		}
		for p := range kb {
			row := (p0+p)*ldb + j0 + jr
			copy(panel[p*nr:p*nr+cols], b[row:row+cols])
		}
	}
}

// kernelGeneric is the portable micro-kernel for a 4×8 tile.
func kernelGeneric(kb int, a, b, c []float32, ldc int) {
	var acc [4][8]float32
	for p := range kb {
		ap := a[p*4 : p*4+4]
		bp := b[p*8 : p*8+8]
		for r, av := range ap {
			row := &acc[r]
			for q, bv := range bp {
				row[q] += av * bv
			}
		}
	}
	for r := range 4 {
		dst := c[r*ldc : r*ldc+8]
		for q := range dst {
			dst[q] += acc[r][q]
		}
	}
}

// gemvT handles few rows of A against a transposed B (the decode case,
// x·Wᵀ with W stored [n,k]): each worker streams its block of W's rows once
// per row of A, sequentially, which is what memory bandwidth rewards.
func gemvT(workers, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if n*k < 1<<16 {
		workers = 1
	}
	step := 4 * arch.lanes
	kv := k / step * step
	parts := split(ceilDiv(n, 16), workers)
	parallel(len(parts)-1, func(w int) {
		j0, j1 := parts[w]*16, min(parts[w+1]*16, n)
		var buf [256]float32
		for jb := j0; jb < j1; jb += len(buf) {
			je := min(jb+len(buf), j1)
			for i := range m {
				ai := a[i*lda : i*lda+k]
				ci := c[i*ldc : i*ldc+n]
				out := buf[:je-jb]
				if kv > 0 {
					arch.dotRows(kv, ai, b[jb*ldb:], ldb, je-jb, out)
				} else {
					clear(out)
				}
				for j := jb; j < je; j++ {
					s := out[j-jb]
					if kv < k {
						br := b[j*ldb : j*ldb+k]
						for p := kv; p < k; p++ {
							s += ai[p] * br[p]
						}
					}
					ci[j] += alpha * s
				}
			}
		}
	})
}
