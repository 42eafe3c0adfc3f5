package cuda

import (
	"fmt"
	"math"
	"sort"
	"unsafe"

	"github.com/minitron/minitron/backend"
)

// floatT checks that t is a float tensor of this backend.
func (b *Backend) floatT(op, what string, t backend.Tensor) (*Tensor, error) {
	if t == nil {
		return nil, fmt.Errorf("cuda: %s: missing tensor (%s)", op, what)
	}
	ct, ok := t.(*Tensor)
	if !ok || ct.b != b {
		return nil, fmt.Errorf("cuda: %s: %T is not a tensor of this backend (%s)", op, t, what)
	}
	if ct.dt != backend.F32 && ct.dt != backend.BF16 {
		return nil, fmt.Errorf("cuda: %s: tensor %v is %v, want a float tensor (%s)", op, ct.shape, ct.dt, what)
	}
	return ct, nil
}

func (b *Backend) intT(op string, t backend.Tensor) (*Tensor, error) {
	if t == nil {
		return nil, fmt.Errorf("cuda: %s: missing tensor", op)
	}
	ct, ok := t.(*Tensor)
	if !ok || ct.b != b {
		return nil, fmt.Errorf("cuda: %s: %T is not a tensor of this backend", op, t)
	}
	if ct.dt != backend.I32 {
		return nil, fmt.Errorf("cuda: %s: tensor %v is %v, want I32", op, ct.shape, ct.dt)
	}
	return ct, nil
}

// mat checks a float tensor seen as a matrix [rows, cols] (a vector of
// rows*cols elements passes where rows or cols is 1).
func (b *Backend) mat(op, what string, t backend.Tensor, rows, cols int) (*Tensor, error) {
	ct, err := b.floatT(op, what, t)
	if err != nil {
		return nil, err
	}
	vector := len(ct.shape) == 1 && (rows == 1 || cols == 1) && ct.numel() == rows*cols
	if !vector && (backend.Rows(t) != rows || backend.Cols(t) != cols) {
		return nil, backend.ShapeError(op, what, t.Shape(), rows, cols)
	}
	return ct, nil
}

func (b *Backend) optMat(op, what string, t backend.Tensor, rows, cols int) (*Tensor, error) {
	if t == nil {
		return nil, nil
	}
	return b.mat(op, what, t, rows, cols)
}

// mats checks every argument of an op and returns them in order (nil for
// an absent optional one).
func (b *Backend) mats(op string, args ...backend.Arg) ([]*Tensor, error) {
	out := make([]*Tensor, len(args))
	for i, a := range args {
		var err error
		if a.Optional {
			out[i], err = b.optMat(op, a.What, a.T, a.Rows, a.Cols)
		} else {
			out[i], err = b.mat(op, a.What, a.T, a.Rows, a.Cols)
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (b *Backend) sameFloats(op string, ts ...backend.Tensor) ([]*Tensor, error) {
	out := make([]*Tensor, len(ts))
	for i, t := range ts {
		ct, err := b.floatT(op, "operand", t)
		if err != nil {
			return nil, err
		}
		if ct.numel() != out0numel(out, ct) {
			return nil, fmt.Errorf("cuda: %s: shapes %v and %v differ", op, ts[0].Shape(), t.Shape())
		}
		out[i] = ct
	}
	return out, nil
}

func out0numel(out []*Tensor, ct *Tensor) int {
	if out[0] == nil {
		return ct.numel()
	}
	return out[0].numel()
}

// temp allocates a scratch tensor. Freeing it right after queuing the
// kernels that use it is safe: the allocator hands the block out again only
// to work queued later on the same stream.
func (b *Backend) temp(dt backend.DType, n int) (*Tensor, error) {
	return b.alloc(dt, []int{n})
}

// MatMul computes c = alpha*op(x)*op(y) + beta*c on cuBLAS.
func (b *Backend) MatMul(c, x, y backend.Tensor, transA, transB bool, alpha, beta float32) error {
	const op = "MatMul"
	ts, err := b.floats3(op, c, x, y)
	if err != nil {
		return err
	}
	ct, xt, yt := ts[0], ts[1], ts[2]
	m, n, k, err := backend.MatMulShape(c, x, y, transA, transB)
	if err != nil {
		return err
	}
	if m == 0 || n == 0 {
		return nil
	}
	if k == 0 {
		return b.Scale(c, beta)
	}
	// cuBLAS multiplies bf16×bf16 into bf16 or f32, and f32×f32 into f32;
	// other mixes convert an f32 operand to bf16 first.
	typeAB := dataBF16
	if xt.dt == backend.F32 && yt.dt == backend.F32 && ct.dt == backend.F32 {
		typeAB = dataF32
	} else {
		for _, p := range []**Tensor{&xt, &yt} {
			if (*p).dt == backend.F32 {
				tmp, err := b.temp(backend.BF16, (*p).numel())
				if err != nil {
					return err
				}
				defer b.Free(tmp)
				if err := b.Copy(tmp, *p); err != nil {
					return err
				}
				tmp.shape = (*p).shape
				*p = tmp
			}
		}
	}
	typeC := dataBF16
	if ct.dt == backend.F32 {
		typeC = dataF32
	}
	return b.dev.gemm(rowMajorGemm(m, n, k, transA, transB, xt.ptr, yt.ptr, ct.ptr, alpha, beta, typeAB, typeC))
}

func (b *Backend) floats3(op string, ts ...backend.Tensor) ([]*Tensor, error) {
	out := make([]*Tensor, len(ts))
	for i, t := range ts {
		ct, err := b.floatT(op, []string{"c", "a", "b"}[i], t)
		if err != nil {
			return nil, err
		}
		out[i] = ct
	}
	return out, nil
}

// checkIDs checks host copies of indices against [0, limit).
func checkIDs(op, what string, ids []int32, limit int) error {
	for i, id := range ids {
		if id < 0 || int(id) >= limit {
			return fmt.Errorf("cuda: %s: %s %d at position %d is outside [0, %d)", op, what, id, i, limit)
		}
	}
	return nil
}

// Embedding gathers table rows by id.
func (b *Backend) Embedding(out, table, ids backend.Tensor) error {
	const op = "Embedding"
	it, err := b.intT(op, ids)
	if err != nil {
		return err
	}
	v, d := backend.Rows(table), backend.Cols(table)
	ts, err := b.mats(op, backend.Need("table", table, v, d), backend.Need("out", out, len(it.host), d))
	if err != nil {
		return err
	}
	tt, ot := ts[0], ts[1]
	if err := checkIDs(op, "token id", it.host, v); err != nil {
		return err
	}
	n := len(it.host)
	return b.launch("embedding", [3]uint32{uint32(n), 1, 1}, rowBlock(d), 0,
		ot.arg(), tt.arg(), it.arg(), argInt(n), argInt(d), argInt(v), argPtr(b.errWord))
}

// EmbeddingBackward adds dout rows into dtable, one float32 sum per
// distinct id (rows are grouped by id on the host from the ids' host copy).
func (b *Backend) EmbeddingBackward(dtable, dout, ids backend.Tensor) error {
	const op = "EmbeddingBackward"
	it, err := b.intT(op, ids)
	if err != nil {
		return err
	}
	v, d := backend.Rows(dtable), backend.Cols(dtable)
	ts, err := b.mats(op, backend.Need("dtable", dtable, v, d), backend.Need("dout", dout, len(it.host), d))
	if err != nil {
		return err
	}
	tt, ot := ts[0], ts[1]
	if err := checkIDs(op, "token id", it.host, v); err != nil {
		return err
	}
	order, starts := groupByID(it.host)
	if len(order) == 0 {
		return nil
	}
	idx, err := b.FromInt32(append(order, starts...), len(order)+len(starts))
	if err != nil {
		return err
	}
	defer b.Free(idx)
	ip := idx.(*Tensor).ptr
	return b.launch("embedding_backward", [3]uint32{uint32(len(starts) - 1), 1, 1}, rowBlock(d), 0,
		tt.arg(), ot.arg(), it.arg(), argPtr(ip), argPtr(ip+uintptr(4*len(order))), argInt(d))
}

// groupByID returns the rows ordered by id (stable) and the start of each
// run of equal ids, with a final entry len(ids).
func groupByID(ids []int32) (order, starts []int32) {
	order = make([]int32, len(ids))
	for i := range order {
		order[i] = int32(i)
	}
	sort.SliceStable(order, func(a, c int) bool { return ids[order[a]] < ids[order[c]] })
	for i := range order {
		if i == 0 || ids[order[i]] != ids[order[i-1]] {
			starts = append(starts, int32(i))
		}
	}
	return order, append(starts, int32(len(ids)))
}

// LayerNorm normalizes rows: (x-mean)*rstd*(w+wOffset) + bias.
func (b *Backend) LayerNorm(out, stats, x, w, bias backend.Tensor, eps, wOffset float32) error {
	const op = "LayerNorm"
	n, d := backend.Rows(x), backend.Cols(x)
	ts, err := b.mats(op, backend.Need("x", x, n, d), backend.Need("out", out, n, d), backend.Need("weight", w, 1, d), backend.Maybe("bias", bias, 1, d), backend.Maybe("stats", stats, n, 2))
	if err != nil {
		return err
	}
	xt, ot, wt, bt, st := ts[0], ts[1], ts[2], ts[3], ts[4]
	return b.launch("layernorm", [3]uint32{uint32(n), 1, 1}, rowBlock(d), 0,
		ot.arg(), optArg(st), xt.arg(), wt.arg(), optArg(bt), argInt(n), argInt(d), argF32(eps), argF32(wOffset))
}

// RMSNorm normalizes rows: x*rstd*w.
func (b *Backend) RMSNorm(out, stats, x, w backend.Tensor, eps float32) error {
	const op = "RMSNorm"
	n, d := backend.Rows(x), backend.Cols(x)
	ts, err := b.mats(op, backend.Need("x", x, n, d), backend.Need("out", out, n, d), backend.Need("weight", w, 1, d), backend.Maybe("stats", stats, n, 1))
	if err != nil {
		return err
	}
	xt, ot, wt, st := ts[0], ts[1], ts[2], ts[3]
	return b.launch("rmsnorm", [3]uint32{uint32(n), 1, 1}, rowBlock(d), 0,
		ot.arg(), optArg(st), xt.arg(), wt.arg(), argInt(n), argInt(d), argF32(eps))
}

// LayerNormBackward overwrites dx and accumulates dw and dbias.
func (b *Backend) LayerNormBackward(dx, dw, dbias, dout, x, w, stats backend.Tensor, wOffset float32) error {
	return b.normBackward("LayerNormBackward", 0, dx, dw, dbias, dout, x, w, stats, wOffset)
}

// RMSNormBackward overwrites dx and accumulates dw.
func (b *Backend) RMSNormBackward(dx, dw, dout, x, w, stats backend.Tensor) error {
	return b.normBackward("RMSNormBackward", 1, dx, dw, nil, dout, x, w, stats, 0)
}

// normRowsPerChunk is the number of rows each partial weight-gradient sum
// covers (more when the chunks would exceed maxGridY); the sums are added
// in chunk order, so results are deterministic.
const normRowsPerChunk = 64

// maxGridY is the largest grid y (and z) dimension of a launch.
const maxGridY = 65535

func (b *Backend) normBackward(op string, kind int, dx, dw, dbias, dout, x, w, stats backend.Tensor, wOffset float32) error {
	n, d := backend.Rows(x), backend.Cols(x)
	ts, err := b.mats(op, backend.Need("x", x, n, d), backend.Need("dout", dout, n, d), backend.Need("dx", dx, n, d), backend.Need("weight", w, 1, d),
		backend.Need("dweight", dw, 1, d), backend.Need("stats", stats, n, 2-kind), backend.Maybe("dbias", dbias, 1, d))
	if err != nil {
		return err
	}
	xt, gt, dxt, wt, dwt, stt, dbt := ts[0], ts[1], ts[2], ts[3], ts[4], ts[5], ts[6]
	if n == 0 || d == 0 {
		return nil
	}
	// Chunks are grid rows (at most 65535): beyond 4M rows they grow.
	per := max(normRowsPerChunk, (n+maxGridY-1)/maxGridY)
	chunks := (n + per - 1) / per
	part, err := b.temp(backend.F32, chunks*2*d)
	if err != nil {
		return err
	}
	defer b.Free(part)
	// Weight gradients first: dx may overwrite dout.
	if err := b.launch("norm_backward_dw_partial", [3]uint32{uint32((d + 31) / 32), uint32(chunks), 1}, [3]uint32{32, 8, 1}, 0,
		argPtr(part.ptr), gt.arg(), xt.arg(), stt.arg(), argInt(kind), argInt(n), argInt(d), argInt(per)); err != nil {
		return err
	}
	if err := b.launch("norm_backward_dx", [3]uint32{uint32(n), 1, 1}, rowBlock(d), 0,
		dxt.arg(), gt.arg(), xt.arg(), wt.arg(), stt.arg(), argInt(kind), argInt(n), argInt(d), argF32(wOffset)); err != nil {
		return err
	}
	return b.launch("norm_backward_dw_finish", [3]uint32{uint32((d + 255) / 256), 1, 1}, block1, 0,
		dwt.arg(), optArg(dbt), argPtr(part.ptr), argInt(chunks), argInt(d))
}

// RoPE rotates x in place.
func (b *Backend) RoPE(x, pos backend.Tensor, r backend.RoPE, inverse bool) error {
	const op = "RoPE"
	pt, err := b.intT(op, pos)
	if err != nil {
		return err
	}
	n, width := len(pt.host), backend.Cols(x)
	xt, err := b.mat(op, "x", x, n, width)
	if err != nil {
		return err
	}
	if r.HeadDim <= 0 || width%r.HeadDim != 0 || r.RotDim%2 != 0 || r.RotDim > r.HeadDim || len(r.InvFreq) != r.RotDim/2 {
		return fmt.Errorf("cuda: RoPE: head dim %d, rotary dim %d, %d frequencies do not fit rows of %d", r.HeadDim, r.RotDim, len(r.InvFreq), width)
	}
	if r.RotDim == 0 || n == 0 {
		return nil
	}
	freq, err := b.upload(float32Bytes(r.InvFreq))
	if err != nil {
		return err
	}
	heads := width / r.HeadDim
	inv := 0
	if inverse {
		inv = 1
	}
	return b.launch("rope", b.grid1(n*heads*r.RotDim/2), block1, 0,
		xt.arg(), pt.arg(), argPtr(freq), argInt(n), argInt(heads), argInt(r.HeadDim), argInt(r.RotDim), argInt(inv))
}

// attnShape is the tiling of the attention kernels for one padded head
// dimension, matching FwdShape and BwdShape in kernels/attention.cu: the
// forward runs fwdW warps over fwdBM query rows with key tiles of fwdBN;
// the backward runs bwdW warps over 16·bwdW keys with query tiles of
// bwdBM, each block producing bwdDS output columns.
type attnShape struct {
	fwdW, fwdBM, fwdBN int
	bwdW, bwdBM, bwdDS int
}

// attnShapes by padded head dimension; a head of hd dimensions runs on
// the smallest that holds it (zero-padded in shared memory).
var attnShapes = map[int]attnShape{
	32:  {fwdW: 4, fwdBM: 64, fwdBN: 64, bwdW: 4, bwdBM: 64, bwdDS: 32},
	64:  {fwdW: 4, fwdBM: 128, fwdBN: 64, bwdW: 8, bwdBM: 64, bwdDS: 64},
	128: {fwdW: 4, fwdBM: 128, fwdBN: 32, bwdW: 8, bwdBM: 32, bwdDS: 128},
	256: {fwdW: 4, fwdBM: 64, fwdBN: 32, bwdW: 4, bwdBM: 32, bwdDS: 128},
}

const attnMaxHead = 256

// attnDim returns the padded head dimension for hd.
func attnDim(hd int) int {
	for _, d := range []int{32, 64, 128, 256} {
		if hd <= d {
			return d
		}
	}
	return 0
}

func (s attnShape) fwdShared(d int) int { return 2 * (s.fwdBM + 2*s.fwdBN) * d }

func (s attnShape) bwdShared(d int) int {
	bn := 16 * s.bwdW
	return 2*(2*bn*d+4*s.bwdBM*d+bn*s.bwdBM) + 4*4*s.bwdBM + 16 // and the block's ticket
}

// attentionShared gives each attention kernel's dynamic shared memory in
// bytes (for any head dimension the kernel serves).
var attentionShared = func() map[string]int {
	m := map[string]int{}
	for d, s := range attnShapes {
		m[fmt.Sprintf("attention_fwd_d%d", d)] = s.fwdShared(d)
		m[fmt.Sprintf("attention_bwd_d%d", d)] = s.bwdShared(d)
	}
	return m
}()

func (b *Backend) attnCheck(op string, a backend.Attn) error {
	if a.HeadDim > attnMaxHead {
		return fmt.Errorf("cuda: %s: head dimension %d is above the %d the attention kernels support", op, a.HeadDim, attnMaxHead)
	}
	d := attnDim(a.HeadDim)
	for _, name := range []string{fmt.Sprintf("attention_fwd_d%d", d), fmt.Sprintf("attention_bwd_d%d", d)} {
		if need, have := attentionShared[name], max(48<<10, b.inf.MaxShared); need > have {
			return fmt.Errorf("cuda: %s: kernel %s needs %d bytes of shared memory for head dimension %d; this GPU has %d",
				op, name, need, a.HeadDim, have)
		}
	}
	return nil
}

// attnSplits chooses how many parts the keys of each row tile are split
// into (flash-decoding): only when the row tiles alone leave most of the
// GPU idle, as batch-1 decoding does, and never below two key tiles a part.
func (b *Backend) attnSplits(blocks, keyTiles int) int {
	if b.attnSplit > 0 {
		return b.attnSplit // parts beyond the key tiles are empty, which the combine handles
	}
	sms := b.inf.SMs
	if blocks*2 > sms {
		return 1
	}
	return max(1, min((sms+blocks-1)/blocks, keyTiles/2, 64))
}

// attnIndex uploads the per-sequence past lengths and slots of a (nil
// when absent).
func (b *Backend) attnIndex(a backend.Attn) (past, slots uintptr, err error) {
	if a.Past != nil {
		if past, err = b.upload(int32Bytes(toInt32(a.Past))); err != nil {
			return 0, 0, err
		}
	}
	if a.Slots != nil {
		if slots, err = b.upload(int32Bytes(toInt32(a.Slots))); err != nil {
			return 0, 0, err
		}
	}
	return past, slots, nil
}

// Attention computes causal grouped-query attention on tensor cores
// (flash style; split over the keys when few row tiles exist).
func (b *Backend) Attention(out, lse, q, k, v backend.Tensor, a backend.Attn) error {
	const op = "Attention"
	if err := a.Check(q, k, v); err != nil {
		return err
	}
	if err := b.attnCheck(op, a); err != nil {
		return err
	}
	wq, wk := a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
	ts, err := b.mats(op, backend.Need("q", q, a.B*a.T, wq), backend.Need("k", k, backend.Rows(k), wk), backend.Need("v", v, backend.Rows(k), wk),
		backend.Need("out", out, a.B*a.T, wq), backend.Maybe("lse", lse, a.B*a.T, a.Heads))
	if err != nil {
		return err
	}
	qt, kt, vt, ot, lt := ts[0], ts[1], ts[2], ts[3], ts[4]
	if a.B == 0 || a.T == 0 {
		return nil
	}
	past, slots, err := b.attnIndex(a)
	if err != nil {
		return err
	}
	d := attnDim(a.HeadDim)
	s := attnShapes[d]
	rows := a.T * (a.Heads / a.KVHeads)
	tiles := (rows + s.fwdBM - 1) / s.fwdBM
	maxKeys := 0
	for i := range a.B {
		maxKeys = max(maxKeys, a.PastOf(i)+a.T)
	}
	nsplit := b.attnSplits(tiles*a.KVHeads*a.B, (maxKeys+s.fwdBN-1)/s.fwdBN)
	var part *Tensor
	if nsplit > 1 {
		// Per split: an output row of d floats and a log-sum-exp per row.
		if part, err = b.temp(backend.F32, nsplit*a.B*a.KVHeads*tiles*s.fwdBM*(d+1)); err != nil {
			return err
		}
		defer b.Free(part)
	}
	name := fmt.Sprintf("attention_fwd_d%d", d)
	grid := [3]uint32{uint32(tiles * nsplit), uint32(a.KVHeads), uint32(a.B)}
	if err := b.launch(name, grid, [3]uint32{uint32(32 * s.fwdW), 1, 1}, s.fwdShared(d),
		ot.arg(), optArg(lt), optArg(part), qt.arg(), kt.arg(), vt.arg(), argPtr(past), argPtr(slots),
		argInt(a.T), argInt(a.Heads), argInt(a.KVHeads), argInt(a.HeadDim), argInt(a.KVRows), argF32(a.Scale), argInt(nsplit)); err != nil {
		return err
	}
	if nsplit == 1 {
		return nil
	}
	return b.launch("attention_combine", [3]uint32{uint32((rows + 7) / 8), uint32(a.KVHeads), uint32(a.B)}, block1, 0,
		ot.arg(), optArg(lt), argPtr(part.ptr), argInt(a.T), argInt(a.Heads), argInt(a.KVHeads), argInt(a.HeadDim),
		argInt(d), argInt(tiles*s.fwdBM), argInt(nsplit))
}

func toInt32(v []int) []int32 {
	out := make([]int32, len(v))
	for i, x := range v {
		out[i] = int32(x)
	}
	return out
}

// AttentionBackward overwrites dq, dk and dv (every row of the key/value
// slots the sequences use), recomputing probabilities from lse tile by
// tile on tensor cores. dq is summed over key tiles in a fixed order, so
// results are deterministic.
func (b *Backend) AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v backend.Tensor, a backend.Attn) error {
	const op = "AttentionBackward"
	if err := a.Check(q, k, v); err != nil {
		return err
	}
	if err := b.attnCheck(op, a); err != nil {
		return err
	}
	n, nkv, wq, wk := a.B*a.T, backend.Rows(k), a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
	ts, err := b.mats(op, backend.Need("dq", dq, n, wq), backend.Need("dk", dk, nkv, wk), backend.Need("dv", dv, nkv, wk), backend.Need("dout", dout, n, wq),
		backend.Need("out", out, n, wq), backend.Need("lse", lse, n, a.Heads), backend.Need("q", q, n, wq), backend.Need("k", k, nkv, wk), backend.Need("v", v, nkv, wk))
	if err != nil {
		return err
	}
	dqt, dkt, dvt, dot, outt, lt, qt, kt, vt := ts[0], ts[1], ts[2], ts[3], ts[4], ts[5], ts[6], ts[7], ts[8]
	if n == 0 {
		return nil
	}
	past, slots, err := b.attnIndex(a)
	if err != nil {
		return err
	}
	D, err := b.temp(backend.F32, n*a.Heads)
	if err != nil {
		return err
	}
	defer b.Free(D)
	warps := n * a.Heads
	if err := b.launch("attention_backward_pre", [3]uint32{uint32((warps*32 + 255) / 256), 1, 1}, block1, 0,
		argPtr(D.ptr), dot.arg(), outt.arg(), argInt(n), argInt(a.Heads), argInt(a.HeadDim)); err != nil {
		return err
	}
	d := attnDim(a.HeadDim)
	s := attnShapes[d]
	rows := a.T * (a.Heads / a.KVHeads)
	qtiles := (rows + s.bwdBM - 1) / s.bwdBM
	slices := d / s.bwdDS
	ktiles := (a.KVRows + 16*s.bwdW - 1) / (16 * s.bwdW)
	acc, err := b.temp(backend.F32, a.B*a.KVHeads*qtiles*s.bwdBM*d)
	if err != nil {
		return err
	}
	defer b.Free(acc)
	nsem := 1 + a.B*a.KVHeads*qtiles*slices // the ticket counter, then one per query tile and slice
	sem, err := b.temp(backend.I32, nsem)
	if err != nil {
		return err
	}
	defer b.Free(sem)
	if err := b.dev.memset32(sem.ptr, 0, int64(nsem)); err != nil {
		return err
	}
	return b.launch(fmt.Sprintf("attention_bwd_d%d", d), [3]uint32{uint32(ktiles * slices), uint32(a.KVHeads), uint32(a.B)},
		[3]uint32{uint32(32 * s.bwdW), 1, 1}, s.bwdShared(d),
		dqt.arg(), dkt.arg(), dvt.arg(), argPtr(acc.ptr), argPtr(sem.ptr), dot.arg(), qt.arg(), kt.arg(), vt.arg(), lt.arg(), argPtr(D.ptr),
		argPtr(past), argPtr(slots), argInt(a.T), argInt(a.Heads), argInt(a.KVHeads), argInt(a.HeadDim), argInt(a.KVRows), argF32(a.Scale))
}

// elementwise launches a grid-stride kernel over tensors of equal size.
func (b *Backend) elementwise(op, kernel string, ts ...backend.Tensor) error {
	cts, err := b.sameFloats(op, ts...)
	if err != nil {
		return err
	}
	n := cts[0].numel()
	args := make([]arg, 0, len(cts)+1)
	for _, t := range cts {
		args = append(args, t.arg())
	}
	return b.launch(kernel, b.grid1(n), block1, 0, append(args, argI64(n))...)
}

// ReLU2 computes max(x,0)².
func (b *Backend) ReLU2(out, x backend.Tensor) error { return b.elementwise("ReLU2", "relu2", out, x) }

// ReLU2Backward computes dx = dout*2*max(x,0).
func (b *Backend) ReLU2Backward(dx, dout, x backend.Tensor) error {
	return b.elementwise("ReLU2Backward", "relu2_backward", dx, dout, x)
}

// SwiGLU computes silu(gate)*up.
func (b *Backend) SwiGLU(out, gate, up backend.Tensor) error {
	return b.elementwise("SwiGLU", "swiglu", out, gate, up)
}

// SwiGLUBackward overwrites dgate and dup.
func (b *Backend) SwiGLUBackward(dgate, dup, dout, gate, up backend.Tensor) error {
	return b.elementwise("SwiGLUBackward", "swiglu_backward", dgate, dup, dout, gate, up)
}

// Add computes a+b.
func (b *Backend) Add(out, x, y backend.Tensor) error { return b.elementwise("Add", "add", out, x, y) }

// ScatterRows writes dst[rows[i]] = src[i].
func (b *Backend) ScatterRows(dst, src, rows backend.Tensor) error {
	return b.moveRows("ScatterRows", "scatter_rows", dst, src, rows, true)
}

// GatherRows reads dst[i] = src[rows[i]].
func (b *Backend) GatherRows(dst, src, rows backend.Tensor) error {
	return b.moveRows("GatherRows", "gather_rows", dst, src, rows, false)
}

func (b *Backend) moveRows(op, kernel string, dst, src, rows backend.Tensor, scatter bool) error {
	rt, err := b.intT(op, rows)
	if err != nil {
		return err
	}
	dt, err := b.floatT(op, "dst", dst)
	if err != nil {
		return err
	}
	st, err := b.floatT(op, "src", src)
	if err != nil {
		return err
	}
	d := backend.Cols(src)
	if backend.Cols(dst) != d {
		return fmt.Errorf("cuda: %s: rows of %d and %d values", op, backend.Cols(dst), d)
	}
	many, few := backend.Rows(dst), backend.Rows(src)
	if !scatter {
		many, few = few, many
	}
	if few != len(rt.host) {
		return fmt.Errorf("cuda: %s: %d row indices for %d rows", op, len(rt.host), few)
	}
	if err := checkIDs(op, "row index", rt.host, many); err != nil {
		return err
	}
	return b.launch(kernel, [3]uint32{uint32(few), 1, 1}, rowBlock(d), 0,
		dt.arg(), st.arg(), rt.arg(), argInt(few), argInt(d), argInt(many), argPtr(b.errWord))
}

// CosineLoss computes 1 − cos(u, v) per row and optionally its gradient.
func (b *Backend) CosineLoss(losses, du, u, v backend.Tensor, scale float32) error {
	const op = "CosineLoss"
	n, d := backend.Rows(u), backend.Cols(u)
	ts, err := b.mats(op, backend.Need("u", u, n, d), backend.Need("v", v, n, d), backend.Need("losses", losses, n, 1), backend.Maybe("du", du, n, d))
	if err != nil {
		return err
	}
	ut, vt, lt, dt := ts[0], ts[1], ts[2], ts[3]
	return b.launch("cosine_loss", [3]uint32{uint32(n), 1, 1}, rowBlock(d), 0,
		lt.arg(), optArg(dt), ut.arg(), vt.arg(), argInt(n), argInt(d), argF32(scale))
}

// CrossEntropy computes per-row losses and optionally their gradient.
func (b *Backend) CrossEntropy(losses, dlogits, logits, targets backend.Tensor, scale float32) error {
	const op = "CrossEntropy"
	tt, err := b.intT(op, targets)
	if err != nil {
		return err
	}
	n, v := len(tt.host), backend.Cols(logits)
	ts, err := b.mats(op, backend.Need("logits", logits, n, v), backend.Need("losses", losses, n, 1), backend.Maybe("dlogits", dlogits, n, v))
	if err != nil {
		return err
	}
	lt, ls, dt := ts[0], ts[1], ts[2]
	for i, t := range tt.host {
		if int(t) >= v {
			return fmt.Errorf("cuda: CrossEntropy: target %d at row %d is outside the vocabulary of %d", t, i, v)
		}
	}
	return b.launch("cross_entropy", [3]uint32{uint32(n), 1, 1}, rowBlock(v), 0,
		ls.arg(), optArg(dt), lt.arg(), tt.arg(), argInt(n), argInt(v), argF32(scale), argPtr(b.errWord))
}

// SquaredNorm sums squares in float64 on the device: one sqnorm launch
// per tensor writes a partial sum per block, sum_f64 adds the partials in
// order, and the one result is read back (a single synchronization). No
// atomics are involved, so the sum is the same on every run.
func (b *Backend) SquaredNorm(ts ...backend.Tensor) (float64, error) {
	cts := make([]*Tensor, len(ts))
	parts := 0
	for i, t := range ts {
		ct, err := b.floatT("SquaredNorm", "tensor", t)
		if err != nil {
			return 0, err
		}
		cts[i] = ct
		parts += int(b.grid1(ct.numel())[0])
	}
	part, err := b.mem.alloc(int64(8 * max(parts, 1)))
	if err != nil {
		return 0, err
	}
	defer b.mem.free(part) // safe: reused only by work queued later
	off := 0
	for _, ct := range cts {
		n := ct.numel()
		grid := b.grid1(n)
		if err := b.launch("sqnorm", grid, block1, 0, ct.arg(), argI64(n), argPtr(part+uintptr(8*off))); err != nil {
			return 0, err
		}
		off += int(grid[0])
	}
	if err := b.launch("sum_f64", [3]uint32{1, 1, 1}, block1, 0, argPtr(part), argInt(parts), argPtr(b.dbl)); err != nil {
		return 0, err
	}
	var s float64
	if err := b.dev.dtoh(unsafe.Pointer(&s), b.dbl, 8); err != nil {
		return 0, err
	}
	return s, nil
}

// Scale multiplies in place.
func (b *Backend) Scale(t backend.Tensor, alpha float32) error {
	ct, err := b.floatT("Scale", "tensor", t)
	if err != nil {
		return err
	}
	n := ct.numel()
	return b.launch("scale", b.grid1(n), block1, 0, ct.arg(), argI64(n), argF32(alpha))
}

// AdamW updates w, m and v in place; bf16 tensors are written with
// stochastic rounding whose noise depends on the step and the tensor's
// id (p.Seed) and on each element's index in the whole tensor (p.Offset
// on), float32 ones exactly.
func (b *Backend) AdamW(w, g, m, v backend.Tensor, p backend.AdamW) error {
	const op = "AdamW"
	ts, err := b.sameFloats(op, w, g, m, v)
	if err != nil {
		return err
	}
	if p.Step < 1 {
		return fmt.Errorf("cuda: AdamW: step %d, want >= 1", p.Step)
	}
	if p.Offset < 0 {
		return fmt.Errorf("cuda: AdamW: offset %d, want >= 0", p.Offset)
	}
	bc1 := 1 - math.Pow(float64(p.Beta1), float64(p.Step))
	bc2 := 1 - math.Pow(float64(p.Beta2), float64(p.Step))
	n := ts[0].numel()
	seed := adamSeed(p.Step, p.Seed)
	return b.launch("adamw", b.grid1(n), block1, 0, ts[0].arg(), ts[1].arg(), ts[2].arg(), ts[3].arg(), argI64(n), argI64(p.Offset),
		argF32(p.LR), argF32(p.Beta1), argF32(p.Beta2), argF32(p.Eps), argF32(p.WeightDecay),
		argF32(float32(bc1)), argF32(float32(math.Sqrt(bc2))), argF32(p.GradScale), argU32(seed))
}

// adamSeed mixes the step and the tensor id into the seed of the adamw
// kernel's stochastic rounding (the splitmix64 finalizer), so no two
// (step, tensor) pairs share their noise in practice.
func adamSeed(step int, id uint32) uint32 {
	h := uint64(uint32(step))<<32 | uint64(id)
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return uint32(h) ^ uint32(h>>32)
}

func klCheck(p backend.KL) error {
	if !(p.Temperature > 0) {
		return fmt.Errorf("cuda: KL: temperature %v must be positive", p.Temperature)
	}
	return nil
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}

// KLDiv compares student and teacher logits row by row.
func (b *Backend) KLDiv(losses, dstudent, student, teacher backend.Tensor, p backend.KL) error {
	const op = "KLDiv"
	if err := klCheck(p); err != nil {
		return err
	}
	n, v := backend.Rows(student), backend.Cols(student)
	ts, err := b.mats(op, backend.Need("student", student, n, v), backend.Need("teacher", teacher, n, v), backend.Need("losses", losses, n, 1), backend.Maybe("dstudent", dstudent, n, v))
	if err != nil {
		return err
	}
	st, tt, lt, dt := ts[0], ts[1], ts[2], ts[3]
	return b.launch("kl_div", [3]uint32{uint32(n), 1, 1}, rowBlock(v), 0,
		lt.arg(), optArg(dt), st.arg(), tt.arg(), argInt(n), argInt(v), argF32(p.Temperature), argInt(boolInt(p.Reverse)), argF32(p.Scale))
}

// topKMax matches TOPK_MAX in kernels/loss.cu.
const topKMax = 1024

// KLTopK compares student logits with a top-k teacher.
func (b *Backend) KLTopK(losses, dstudent, student, ids, logp backend.Tensor, p backend.KL) error {
	const op = "KLTopK"
	if err := klCheck(p); err != nil {
		return err
	}
	if p.Missing != backend.MissingRenormalize && p.Missing != backend.MissingUniform {
		return fmt.Errorf("cuda: KLTopK: missing-mass policy %q: use %s or %s", p.Missing, backend.MissingRenormalize, backend.MissingUniform)
	}
	if p.Reverse && p.Missing == backend.MissingRenormalize {
		return fmt.Errorf("cuda: KLTopK: reverse KL against a renormalized top-k teacher is infinite; use the %s policy", backend.MissingUniform)
	}
	n, v := backend.Rows(student), backend.Cols(student)
	it, err := b.intT(op, ids)
	if err != nil {
		return err
	}
	k := backend.Cols(ids)
	if len(it.host) != n*k {
		return backend.ShapeError(op, "ids", ids.Shape(), n, k)
	}
	if k > topKMax {
		return fmt.Errorf("cuda: KLTopK: top-%d teacher; the kernel supports at most %d", k, topKMax)
	}
	ts, err := b.mats(op, backend.Need("student", student, n, v), backend.Need("logp", logp, n, k), backend.Need("losses", losses, n, 1), backend.Maybe("dstudent", dstudent, n, v))
	if err != nil {
		return err
	}
	st, pt, lt, dt := ts[0], ts[1], ts[2], ts[3]
	for i, id := range it.host {
		if id < 0 || int(id) >= v {
			return fmt.Errorf("cuda: KLTopK: teacher token %d at row %d is outside the vocabulary of %d", id, i/max(k, 1), v)
		}
	}
	if k >= v && p.Missing == backend.MissingUniform {
		return fmt.Errorf("cuda: KLTopK: top-%d of a %d-token vocabulary leaves no token for the uniform policy", k, v)
	}
	return b.launch("kl_topk", [3]uint32{uint32(n), 1, 1}, rowBlock(v), 0,
		lt.arg(), optArg(dt), st.arg(), it.arg(), pt.arg(), argInt(n), argInt(v), argInt(k), argF32(p.Temperature),
		argInt(boolInt(p.Reverse)), argInt(boolInt(p.Missing == backend.MissingUniform)), argF32(p.Scale), argPtr(b.errWord))
}
