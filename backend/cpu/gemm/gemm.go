// Package gemm is the float32 matrix multiply of the CPU backend: cache-blocked
// (BLIS-style packing of B panels; A read in place through its strides),
// parallel over cores, with an assembly FMA micro-kernel (AVX-512 or AVX2,
// chosen at run time) and a pure Go fallback.
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
	kernel kernelFunc
	// dotRows writes out[r] = a[:n]·b[r*ldb:][:n] for r < rows; n is a
	// multiple of 4*lanes.
	dotRows func(n int, a, b []float32, ldb, rows int, out []float32)
}

// kernelFunc computes, for t < panels, C_t[mr×nr] = alpha·A·B_t, or
// C_t += alpha·A·B_t when acc, over a depth of kc, where A(r, p) =
// a[r*rs + p*ks], B_t is the packed panel at b[t*bp:] (B_t(p, q) =
// b[t*bp + p*nr + q]) and C_t starts at c[t*nr] with row stride ldc: one
// row panel of A against consecutive column panels of B.
type kernelFunc func(kc int, a []float32, rs, ks int, b []float32, bp int, c []float32, ldc int, alpha float32, acc bool, panels int)

var generic = archImpl{name: "generic", mr: 4, nr: 8, kernel: kernelGeneric}

var arch = generic

// avx2x12 is the AVX-512 kernel's twelve-row addressing in AVX2 registers
// (12×8), set where the machine has AVX2: tests run it where AVX-512 is
// missing.
var avx2x12 archImpl

// copyRows, where the machine has it, copies rows rows of w floats from
// src (row stride ss) to dst (row stride ds) and returns true, or returns
// false when w is not one of the widths it has (6, 12, 16, 32).
var copyRows func(w int, dst []float32, ds int, src []float32, ss, rows int) bool

// transpose, where the machine has it, writes dst[p*ds + q] = src[q*ss + p]
// for q < 8 and p < k rounded down to a multiple of 8.
var transpose func(dst []float32, ds int, src []float32, ss, k int)

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

// RowsPerTile is the number of rows of C the micro-kernel computes at once;
// products whose row count is a multiple of it need no padding.
func RowsPerTile() int { return arch.mr }

// Cache blocking: a kc×nr panel of B and an mr×kc block of A are the
// micro-kernel's working set (L1); a kc×nc block of packed B (bBlock floats,
// 1 MB, at most: L2 or L3) stays cached while every row panel of A passes
// over it. A larger block reads A fewer times; at the tiny recipe's shapes
// 1 MB ran 1–6% faster than 512 KB and as fast as 2 or 4 MB (interleaved
// single-core measurements).
const (
	kc     = 256
	bBlock = 256 << 10
)

// ncFor is the width of the packed B block for a depth of kb.
func ncFor(kb int) int {
	return max(arch.nr, bBlock/max(kb, 1)/arch.nr*arch.nr)
}

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
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	if !transA && transB && m < arch.mr/2 && arch.dotRows != nil {
		scaleC(m, n, beta, c, ldc)
		gemvT(workers, m, n, k, alpha, a, lda, b, ldb, c, ldc)
		return
	}
	// beta 0 and 1 need no pass over C: the first block of depth stores
	// (or adds to) C directly.
	acc := beta != 0
	if beta != 0 && beta != 1 {
		scaleC(m, n, beta, c, ldc)
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
			blocked(transA, transB, m, j1-j0, k, alpha, a, lda, offsetB(b, ldb, transB, j0), ldb, acc, c[j0:], ldc)
		})
		return
	}
	parts := split(mt, workers)
	parallel(len(parts)-1, func(w int) {
		i0, i1 := parts[w]*arch.mr, min(parts[w+1]*arch.mr, m)
		blocked(transA, transB, i1-i0, n, k, alpha, offsetA(a, lda, transA, i0), lda, b, ldb, acc, c[i0*ldc:], ldc)
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

// strides returns the row and depth strides of op(A) stored with row stride lda.
func strides(trans bool, lda int) (rs, ks int) {
	if trans {
		return 1, lda
	}
	return lda, 1
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

var pool = sync.Pool{New: func() any { return newWorkspace() }}

// maxMR and maxNR bound the tiles of every kernel, so a workspace serves
// whichever is in use.
const maxMR, maxNR = 12, 32

func newWorkspace() *workspace {
	return &workspace{
		a:    make([]float32, maxMR*kc),
		b:    make([]float32, bBlock+kc*maxNR),
		tile: make([]float32, maxMR*maxNR),
	}
}

// blocked runs the cache-blocked loops on one goroutine: C = alpha*op(A)*op(B)
// (+ C when acc).
func blocked(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, acc bool, c []float32, ldc int) {
	ws := pool.Get().(*workspace)
	defer pool.Put(ws)
	rs, ks := strides(transA, lda)
	for p0 := 0; p0 < k; p0 += kc {
		kb := min(kc, k-p0)
		nc := ncFor(kb)
		for j0 := 0; j0 < n; j0 += nc {
			nb := min(nc, n-j0)
			packB(ws.b, b, ldb, transB, p0, kb, j0, nb, kb)
			mul(m, nb, kb, alpha, a[p0*ks:], rs, ks, transA, ws.b, kb, acc || p0 > 0, c[j0:], ldc, ws)
		}
	}
}

// mul computes C[m×n] = alpha·A·B (+ C when acc) for A(i, p) = a[i*rs + p*ks]
// and B packed in panels of depth kp ≥ k (panel j at bp[j*kp*nr:]). Row
// panels of A are read in place, except a last partial one (zero-padded
// into the workspace) and, when pack is set (A stored transposed, so a
// panel's rows are spread over k lines), every one: packed once, it serves
// all of B's panels from L1.
func mul(m, n, k int, alpha float32, a []float32, rs, ks int, pack bool, bp []float32, kp int, acc bool, c []float32, ldc int, ws *workspace) {
	mr, nr := arch.mr, arch.nr
	full := n / nr // column panels the kernel stores in place
	for i := 0; i < m; i += mr {
		rows := min(mr, m-i)
		ap, ars, aks := a[i*rs:], rs, ks
		if rows < mr || pack {
			ap, ars, aks = packA(ws.a, ap, rs, ks, rows, k), 1, mr
		}
		j0 := 0
		if rows == mr && full > 0 {
			arch.kernel(k, ap, ars, aks, bp, kp*nr, c[i*ldc:], ldc, alpha, acc, full)
			j0 = full * nr
		}
		for j := j0; j < n; j += nr {
			// A partial tile: computed aside, its rows and columns copied.
			cols := min(nr, n-j)
			t := ws.tile
			arch.kernel(k, ap, ars, aks, bp[j*kp:], kp*nr, t, nr, alpha, false, 1)
			for r := range rows {
				dst := c[(i+r)*ldc+j : (i+r)*ldc+j+cols]
				src := t[r*nr : r*nr+cols]
				if acc {
					for q, v := range src {
						dst[q] += v
					}
				} else {
					copy(dst, src)
				}
			}
		}
	}
}

// packA copies rows < mr rows of A (A(r, p) = a[r*rs + p*ks], p < k) into a
// zero-padded panel of mr rows, k-major, and returns it.
func packA(dst, a []float32, rs, ks, rows, k int) []float32 {
	mr := arch.mr
	panel := dst[:mr*k]
	if rows < mr {
		clear(panel)
	}
	if rs == 1 && rows == mr && copyRows != nil && copyRows(mr, panel, mr, a, ks, k) {
		return panel // each depth step was mr contiguous values
	}
	for r := range rows {
		for p := range k {
			panel[p*mr+r] = a[r*rs+p*ks]
		}
	}
	return panel
}

// packB copies op(B)[p0:p0+kb, j0:j0+nb] into panels of nr columns, each
// of depth kp ≥ kb stored k-major (nr values per k), zero-padding the last
// panel's missing columns.
func packB(dst, b []float32, ldb int, trans bool, p0, kb, j0, nb, kp int) {
	nr := arch.nr
	for jr := 0; jr < nb; jr += nr {
		panel := dst[jr*kp : jr*kp+nr*kb]
		cols := min(nr, nb-jr)
		if cols < nr {
			clear(panel)
		}
		if trans {
			q0 := 0
			if transpose != nil {
				// Blocks of 8 columns by 8 depth steps, transposed in registers.
				k8 := kb &^ 7
				for ; q0+8 <= cols && k8 > 0; q0 += 8 {
					transpose(panel[q0:], nr, b[(j0+jr+q0)*ldb+p0:], ldb, k8)
					for q := q0; q < q0+8; q++ {
						src := b[(j0+jr+q)*ldb+p0 : (j0+jr+q)*ldb+p0+kb]
						for p := k8; p < kb; p++ {
							panel[p*nr+q] = src[p]
						}
					}
				}
			}
			for q := q0; q < cols; q++ {
				src := b[(j0+jr+q)*ldb+p0 : (j0+jr+q)*ldb+p0+kb]
				for p, v := range src {
					panel[p*nr+q] = v
				}
			}
			continue
		}
		if cols == nr && copyRows != nil && copyRows(nr, panel, nr, b[p0*ldb+j0+jr:], ldb, kb) {
			continue
		}
		for p := range kb {
			row := (p0+p)*ldb + j0 + jr
			copy(panel[p*nr:p*nr+cols], b[row:row+cols])
		}
	}
}

// kernelGeneric is the portable micro-kernel for 4×8 tiles.
func kernelGeneric(kb int, a []float32, rs, ks int, b []float32, bp int, c []float32, ldc int, alpha float32, acc bool, panels int) {
	for pn := range panels {
		var t [4][8]float32
		bt := b[pn*bp:]
		for p := range kb {
			bv := bt[p*8 : p*8+8]
			for r := range 4 {
				av := a[r*rs+p*ks]
				row := &t[r]
				for q, x := range bv {
					row[q] += av * x
				}
			}
		}
		for r := range 4 {
			dst := c[r*ldc+pn*8 : r*ldc+pn*8+8]
			for q := range dst {
				if acc {
					dst[q] += alpha * t[r][q]
				} else {
					dst[q] = alpha * t[r][q]
				}
			}
		}
	}
}

// Panels is op(B) packed once for several products against it (MulPanels):
// the keys and values of an attention head, used by every block of queries.
type Panels struct {
	buf  []float32
	k, n int
}

// Pack packs op(B) of k×n: B is stored k×n, or n×k when trans, with row
// stride ldb. The storage is reused across calls.
func (p *Panels) Pack(trans bool, k, n int, b []float32, ldb int) {
	size := ceilDiv(n, arch.nr) * arch.nr * k
	if cap(p.buf) < size {
		p.buf = make([]float32, size)
	}
	p.buf, p.k, p.n = p.buf[:size], k, n
	if k > 0 {
		packB(p.buf, b, ldb, trans, 0, k, 0, n, k)
	}
}

// MulPanels computes C[m×n] = alpha·op(A)·B[0:k, 0:n] (+ C when acc) on
// the calling goroutine, where B is p (n ≤ its width, k ≤ its depth) and
// op(A) is m×k: A is stored m×k, or k×m when transA, with row stride lda.
func MulPanels(transA bool, m, n, k int, alpha float32, a []float32, lda int, p *Panels, acc bool, c []float32, ldc int) {
	if k > p.k || n > p.n {
		panic("gemm: MulPanels beyond its panels")
	}
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		if !acc {
			scaleC(m, n, 0, c, ldc)
		}
		return
	}
	ws := pool.Get().(*workspace)
	defer pool.Put(ws)
	rs, ks := strides(transA, lda)
	for p0 := 0; p0 < k; p0 += kc {
		kb := min(kc, k-p0)
		mul(m, n, kb, alpha, a[p0*ks:], rs, ks, transA, p.buf[p0*arch.nr:], p.k, acc || p0 > 0, c, ldc, ws)
	}
}

// gemvT handles few rows of A against a transposed B (the decode case,
// x·Wᵀ with W stored [n,k]): each worker streams its block of W's rows once
// per row of A, sequentially, which is what memory bandwidth rewards.
// C must already hold beta·C.
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
