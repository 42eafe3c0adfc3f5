package cuda

import (
	"errors"
	"math"
	"strings"
	"testing"
	"unsafe"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/backendtest"
	"github.com/minitron/minitron/kernels"
)

func fakeBackend(t *testing.T) (*Backend, *fakeDevice) {
	t.Helper()
	kern, err := kernels.Kernels()
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeDevice()
	b, err := newBackend(f, kern)
	if err != nil {
		t.Fatal(err)
	}
	return b, f
}

// The parts of the conformance suite that need no kernel beyond what the
// fake executes: uploads and downloads in both float storages, copies,
// views, fills, and every MatMul shape and transpose through the
// row-major to column-major mapping. bf16 tolerances apply.
func TestFakeConformance(t *testing.T) {
	backendtest.RunOnly(t, func(t *testing.T) backend.Backend { b, _ := fakeBackend(t); return b }, backendtest.BF16, "MatMul", "Errors")
}

func TestFakeStorage(t *testing.T) {
	b, _ := fakeBackend(t)
	vals := []float32{1, -2.5, 3.14159, 1e-3, 65504, -0}
	bt, err := b.FromFloat32(append([]float32(nil), vals...), 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if bt.DType() != backend.BF16 {
		t.Fatalf("FromFloat32 made %v, want BF16", bt.DType())
	}
	got, err := b.ToFloat32(bt)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vals {
		if want := backend.BF16ToF32(backend.F32ToBF16(v)); got[i] != want {
			t.Errorf("bf16 round trip [%d]: %v, want %v", i, got[i], want)
		}
	}
	ft, err := b.New(backend.F32, 6)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Write(ft, vals); err != nil {
		t.Fatal(err)
	}
	got, _ = b.ToFloat32(ft)
	for i, v := range vals {
		if got[i] != v {
			t.Errorf("f32 write [%d]: %v, want %v exactly", i, got[i], v)
		}
	}
	// Copy converts f32 to bf16 (through the convert kernel).
	if err := b.Copy(bt, ft); err != nil {
		t.Fatal(err)
	}
	got, _ = b.ToFloat32(bt)
	if got[2] != backend.BF16ToF32(backend.F32ToBF16(3.14159)) {
		t.Errorf("converted copy: %v", got)
	}
	// Views share storage; a view of an I32 tensor shares its host copy.
	it, err := b.FromInt32([]int32{5, 6, 7, 8}, 4)
	if err != nil {
		t.Fatal(err)
	}
	iv, err := b.View(it, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := b.ToInt32(iv); got[0] != 6 || got[1] != 7 {
		t.Fatalf("int view %v", got)
	}
	if _, err := b.View(it, 3, 2); err == nil {
		t.Fatal("view past the end accepted")
	}
	if _, err := b.New(backend.F16, 3); err == nil {
		t.Fatal("F16 tensor accepted")
	}
	inUse, peak, _ := b.MemoryStats()
	b.Free(bt)
	b.Free(ft)
	b.Free(it)
	b.Free(iv) // a view: nothing to free
	if after, _, cached := b.MemoryStats(); after >= inUse || cached == 0 || peak < inUse {
		t.Fatalf("in use %d -> %d, cached %d, peak %d", inUse, after, cached, peak)
	}
}

// TestKernelLaunches runs every op on the fake device: each launch's
// arguments must match its kernel's declaration in kernels/*.cu (kinds and
// count), grids and blocks must be legal, and every kernel must be used.
func TestKernelLaunches(t *testing.T) {
	b, f := fakeBackend(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	nf := func(dt backend.DType, shape ...int) backend.Tensor {
		t.Helper()
		x, err := b.New(dt, shape...)
		must(err)
		return x
	}
	ints := func(v ...int32) backend.Tensor {
		t.Helper()
		x, err := b.FromInt32(v, len(v))
		must(err)
		return x
	}
	const n, d, V = 6, 40, 50
	bf, f32 := backend.BF16, backend.F32
	x, out, w, bias := nf(bf, n, d), nf(bf, n, d), nf(bf, d), nf(bf, d)
	stats2, stats1 := nf(f32, n, 2), nf(f32, n)
	must(b.LayerNorm(out, stats2, x, w, bias, 1e-5, 1))
	must(b.LayerNormBackward(out, w, bias, x, x, w, stats2, 1))
	must(b.RMSNorm(out, stats1, x, w, 1e-5))
	must(b.RMSNormBackward(out, w, x, x, w, stats1))
	table := nf(bf, V, d)
	ids := ints(3, 1, 3, 0, 49, 1)
	must(b.Embedding(out, table, ids))
	must(b.EmbeddingBackward(table, out, ids))
	pos := ints(0, 1, 2, 3, 4, 5)
	rope := backend.RoPE{HeadDim: 8, RotDim: 4, InvFreq: []float32{1, 0.01}}
	must(b.RoPE(x, pos, rope, false))
	must(b.RoPE(x, pos, rope, true))
	a := backend.Attn{B: 2, T: 3, Heads: 4, KVHeads: 2, HeadDim: 10, KVRows: 3, Scale: 0.3}
	q, kk, vv, ao := nf(bf, 6, 40), nf(bf, 6, 20), nf(bf, 6, 20), nf(bf, 6, 40)
	lse := nf(f32, 6, 4)
	must(b.Attention(ao, lse, q, kk, vv, a))
	must(b.AttentionBackward(nf(bf, 6, 40), nf(bf, 6, 20), nf(bf, 6, 20), ao, ao, lse, q, kk, vv, a))
	cached := a
	cached.KVRows, cached.Past, cached.Slots = 5, []int{2, 0}, []int{1, 0}
	must(b.Attention(ao, nil, q, nf(bf, 10, 20), nf(bf, 10, 20), cached))
	must(b.AttentionBackward(nf(bf, 6, 40), nf(bf, 10, 20), nf(bf, 10, 20), ao, ao, lse, q, nf(bf, 10, 20), nf(bf, 10, 20), cached))
	// The wider head dimensions, and decoding split over the keys.
	for _, hd := range []int{64, 128, 256} {
		w := backend.Attn{B: 1, T: 2, Heads: 2, KVHeads: 1, HeadDim: hd, KVRows: 2, Scale: 0.1}
		qw, kw, ow := nf(bf, 2, 2*hd), nf(bf, 2, hd), nf(bf, 2, 2*hd)
		lw := nf(f32, 2, 2)
		must(b.Attention(ow, lw, qw, kw, kw, w))
		must(b.AttentionBackward(nf(bf, 2, 2*hd), nf(bf, 2, hd), nf(bf, 2, hd), ow, ow, lw, qw, kw, kw, w))
	}
	b.attnSplit = 3
	decode := backend.Attn{B: 1, T: 1, Heads: 4, KVHeads: 2, HeadDim: 10, KVRows: 300, Past: []int{250}, Scale: 0.3}
	must(b.Attention(nf(bf, 1, 40), nf(f32, 1, 4), nf(bf, 1, 40), nf(bf, 300, 20), nf(bf, 300, 20), decode))
	b.attnSplit = 0
	must(b.ReLU2(out, x))
	must(b.ReLU2Backward(out, x, x))
	must(b.SwiGLU(out, x, x))
	must(b.SwiGLUBackward(out, x, x, x, x))
	must(b.Add(out, x, x))
	must(b.GatherRows(nf(bf, 2, d), x, ints(5, 0)))
	must(b.ScatterRows(x, nf(bf, 2, d), ints(1, 4)))
	logits, losses := nf(bf, n, V), nf(f32, n)
	must(b.CrossEntropy(losses, logits, logits, ints(1, -1, 3, 49, 0, 2), 0.5))
	must(b.CosineLoss(losses, out, x, x, 1))
	_, err := b.SquaredNorm(x)
	must(err)
	must(b.Scale(x, 2))
	must(b.Fill(x, 1))
	must(b.Copy(nf(f32, n, d), x))
	must(b.AdamW(w, bias, nf(f32, d), nf(f32, d), backend.AdamW{LR: 1e-3, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, Step: 1, GradScale: 1}))
	must(b.KLDiv(losses, logits, logits, nf(bf, n, V), backend.KL{Temperature: 2, Scale: 1}))
	tk := ints(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
	tkIDs, _ := b.View(tk, 0, n, 2)
	must(b.KLTopK(losses, logits, logits, tkIDs, nf(f32, n, 2), backend.KL{Temperature: 1, Scale: 1, Missing: backend.MissingUniform}))
	must(b.MatMul(nf(bf, n, V), x, table, false, true, 1, 0))
	must(b.MatMul(nf(f32, d, d), x, nf(f32, n, d), true, false, 1, 0)) // mixed: f32 operand converted

	kern, _ := kernels.Kernels()
	var unused []string
	used := map[string]bool{}
	for _, k := range f.launched() {
		used[k] = true
	}
	for name := range kern {
		if !used[name] {
			unused = append(unused, name)
		}
	}
	if len(unused) > 0 {
		t.Errorf("kernels never launched by any op: %v", unused)
	}
	for _, l := range f.launches {
		if s, ok := attentionShared[l.name]; ok && l.shared != s {
			t.Errorf("%s launched with %d bytes of shared memory, want %d", l.name, l.shared, s)
		}
		// Heads 4 in 2 KV groups, T = 3: 6 packed rows, one row tile per (KV head, sequence).
		if l.name == "attention_fwd_d32" && l.grid[2] == 2 && (l.grid != [3]uint32{1, 2, 2}) {
			t.Errorf("attention grid %v, want [1 2 2]", l.grid)
		}
		if l.name == "attention_fwd_d32" && l.grid[2] == 1 && (l.grid != [3]uint32{3, 2, 1}) {
			t.Errorf("split attention grid %v, want [3 2 1] (one row tile, 3 key splits)", l.grid)
		}
	}
}

func TestHostIndexChecks(t *testing.T) {
	b, f := fakeBackend(t)
	table, _ := b.New(backend.BF16, 10, 4)
	out, _ := b.New(backend.BF16, 2, 4)
	ids, _ := b.FromInt32([]int32{3, 10}, 2)
	before := len(f.launches)
	err := b.Embedding(out, table, ids)
	if err == nil || !strings.Contains(err.Error(), "token id 10 at position 1") {
		t.Fatalf("out-of-range id: %v", err)
	}
	if len(f.launches) != before {
		t.Fatal("a kernel was launched for invalid ids")
	}
	logits, _ := b.New(backend.BF16, 2, 10)
	losses, _ := b.New(backend.F32, 2)
	if err := b.CrossEntropy(losses, nil, logits, ids, 1); err == nil || !strings.Contains(err.Error(), "target 10") {
		t.Fatalf("out-of-range target: %v", err)
	}
	// A kernel-side report surfaces at the next synchronization, once.
	if err := f.memset32(b.errWord, 2, 1); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(); err == nil || !strings.Contains(err.Error(), "row index") {
		t.Fatalf("kernel report: %v", err)
	}
	if err := b.Sync(); err != nil {
		t.Fatalf("report not cleared: %v", err)
	}
}

func TestArgs(t *testing.T) {
	k := kernels.Kernel{Name: "k", File: "x.cu", Params: []kernels.Param{{Name: "p", Kind: kernels.Ptr}, {Name: "n", Kind: kernels.Int}, {Name: "s", Kind: kernels.Float}}, MaxThreads: 256}
	blk256 := [3]uint32{32, 8, 1}
	if err := checkLaunch(k, blk256, []arg{argPtr(1), argInt(2), argF32(3)}); err != nil {
		t.Fatal(err)
	}
	if err := checkLaunch(k, blk256, []arg{argPtr(1), argI64(2), argF32(3)}); err == nil || !strings.Contains(err.Error(), "parameter 1 (n)") {
		t.Fatalf("wrong kind: %v", err)
	}
	if err := checkLaunch(k, blk256, []arg{argPtr(1)}); err == nil {
		t.Fatal("wrong count accepted")
	}
	if err := checkLaunch(k, [3]uint32{32, 8, 2}, []arg{argPtr(1), argInt(2), argF32(3)}); err == nil || !strings.Contains(err.Error(), "at most 256 threads") {
		t.Fatalf("a block above the launch bounds: %v", err)
	}
	var blk argBlock
	args := []arg{argPtr(0xdeadbeef00), argInt(-3), argF32(1.5), argI64(1 << 40), argU32(7)}
	blk.pack(args)
	for i, p := range blk.ptrs {
		if p != unsafe.Pointer(&blk.vals[i]) {
			t.Fatalf("pointer %d does not point at its value", i)
		}
	}
	if *(*int32)(blk.ptrs[1]) != -3 || *(*float32)(blk.ptrs[2]) != 1.5 || *(*int64)(blk.ptrs[3]) != 1<<40 ||
		*(*uint64)(blk.ptrs[0]) != 0xdeadbeef00 || *(*uint32)(blk.ptrs[4]) != 7 {
		t.Fatalf("packed values wrong: %#v", blk.vals)
	}
}

func TestAllocator(t *testing.T) {
	f := newFakeDevice()
	a := newAllocator(f)
	p1, err := a.alloc(1000)
	if err != nil {
		t.Fatal(err)
	}
	a.free(p1)
	p2, _ := a.alloc(900) // same 1024-byte class: reused without the driver
	if p2 != p1 || f.mallocs != 1 {
		t.Fatalf("not reused: %#x %#x, %d mallocs", p1, p2, f.mallocs)
	}
	big, _ := a.alloc(3 << 20)
	if roundSize(3<<20) != 4<<20 || a.inUse != 1024+4<<20 {
		t.Fatalf("in use %d", a.inUse)
	}
	a.free(big)
	a.free(p2)
	// Out of memory: the cache is released and the allocation retried.
	f.limit = f.used + 2<<20
	p3, err := a.alloc(5 << 20) // a 6 MiB block: fits only once the cached 4 MiB is given back
	if err != nil {
		t.Fatalf("alloc after releasing the cache: %v", err)
	}
	if a.cached != 0 || f.frees != 2 {
		t.Fatalf("cache not released: cached %d, %d frees", a.cached, f.frees)
	}
	if f.freeSyncs[0] == 0 {
		t.Fatal("cached blocks were given back before the stream drained")
	}
	_, err = a.alloc(100 << 20)
	if !errors.Is(err, ErrOutOfMemory) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("out of memory error: %v", err)
	}
	a.free(p3)
	if a.peak < 6<<20 {
		t.Fatalf("peak %d", a.peak)
	}
}

func TestGroupByID(t *testing.T) {
	order, starts := groupByID([]int32{5, 2, 5, 9, 2, 2})
	want := []int32{1, 4, 5, 0, 2, 3}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("order %v, want %v", order, want)
		}
	}
	if len(starts) != 4 || starts[0] != 0 || starts[1] != 3 || starts[2] != 5 || starts[3] != 6 {
		t.Fatalf("starts %v", starts)
	}
}

func TestRowMajorGemmMapping(t *testing.T) {
	g := rowMajorGemm(3, 5, 7, false, true, 10, 20, 30, 1, 0, dataBF16, dataF32)
	// cᵀ (5×3) = op(y)ᵀ op(x)ᵀ: y (stored [5,7]) is A, transposed; x (stored [3,7]) is B.
	if g.m != 5 || g.n != 3 || g.k != 7 || !g.transA || g.transB || g.a != 20 || g.b != 10 || g.lda != 7 || g.ldb != 7 || g.ldc != 5 {
		t.Fatalf("%+v", g)
	}
	if math.Abs(float64(g.alpha)-1) > 0 {
		t.Fatal(g.alpha)
	}
}

func TestStatusErrors(t *testing.T) {
	err := statusError(driverStatus, "cuMemAlloc_v2", 2)
	if !errors.Is(err, ErrOutOfMemory) || !strings.Contains(err.Error(), "cuMemAlloc_v2") || !strings.Contains(err.Error(), "CUDA_ERROR_OUT_OF_MEMORY") {
		t.Fatalf("%v", err)
	}
	if statusError(cublasStatus, "cublasGemmEx", 0) != nil {
		t.Fatal("success is an error")
	}
	if err := statusError(cublasStatus, "cublasGemmEx", 8); !strings.Contains(err.Error(), "compute capability 8.0") {
		t.Fatalf("%v", err)
	}
	if err := statusError(nvrtcStatus, "nvrtcCompileProgram", 77); !strings.Contains(err.Error(), "status 77") {
		t.Fatalf("%v", err)
	}
}

// Small uploads are cached by content and dropped only at a
// synchronization, never while an op may still hold their addresses.
func TestUploadCache(t *testing.T) {
	b, f := fakeBackend(t)
	p1, err := b.upload([]byte{1, 2, 3, 4})
	if err != nil {
		t.Fatal(err)
	}
	if p2, _ := b.upload([]byte{1, 2, 3, 4}); p2 != p1 {
		t.Fatal("same content uploaded twice")
	}
	for i := range 300 {
		if _, err := b.upload([]byte{byte(i), byte(i >> 8), 9, 9}); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.mem(p1, 4); got[0] != 1 || got[3] != 4 || len(b.uploads) < 300 {
		t.Fatal("an upload was dropped before a synchronization")
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if len(b.uploads) != 0 {
		t.Fatalf("%d uploads kept after a synchronization", len(b.uploads))
	}
}
