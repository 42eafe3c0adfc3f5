package cpu

import (
	"math"
	"sync"
	"sync/atomic"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu/gemm"
	"github.com/minitron/minitron/backend/cpu/vec"
)

// qBlock is the number of queries whose score rows are held at once: memory
// stays O(qBlock × keys) per core, never T×T per head.
const qBlock = 64

// runTasks runs f(task) for task in [0,n) on up to b.threads goroutines,
// giving each goroutine its own scratch value from mk.
func runTasks[S any](b *Backend, n int, mk func() S, f func(task int, scratch S)) {
	workers := max(1, min(b.threads, n))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := mk()
			for {
				t := int(next.Add(1) - 1)
				if t >= n {
					return
				}
				f(t, s)
			}
		}()
	}
	wg.Wait()
}

// panelQueries is the number of queries per sequence from which attention
// packs each head's keys and values once for all of them (Attention's
// panel path); fewer (decoding) multiply against K and V in place.
const panelQueries = 8

// Attention computes causal grouped-query attention.
func (b *Backend) Attention(out, lse, q, k, v backend.Tensor, a backend.Attn) error {
	const op = "Attention"
	if err := a.Check(q, k, v); err != nil {
		return err
	}
	wq, wk := a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
	fs, err := mats(op, backend.Need("q", q, a.B*a.T, wq), backend.Need("k", k, backend.Rows(k), wk), backend.Need("v", v, backend.Rows(k), wk),
		backend.Need("out", out, a.B*a.T, wq), backend.Maybe("lse", lse, a.B*a.T, a.Heads))
	if err != nil {
		return err
	}
	if a.T >= panelQueries {
		b.attentionPanels(fs[0], fs[1], fs[2], fs[3], fs[4], a)
	} else {
		b.attentionByHead(fs[0], fs[1], fs[2], fs[3], fs[4], a)
	}
	return nil
}

// softmaxRow turns row[:valid] of scores into probabilities, zeroes the
// rest of row and returns the log-sum-exp of the scores.
func softmaxRow(row []float32, valid int) float32 {
	mx := vec.Max(row[:valid])
	sum := vec.ExpSum(row[:valid], row[:valid], 1, mx)
	clear(row[valid:])
	vec.Scale(row[:valid], float32(1/sum))
	return mx + float32(math.Log(sum))
}

// expRowPadded replaces row[:valid] of scores x with e^(x − max) and zeroes
// the rest of row up to width, for a row whose storage extends to a
// multiple of 8 past valid: the exponentials run over whole vectors, the
// scores past valid set to -Inf (whose exponential is 0). It returns the
// row's maximum and the sum of the exponentials; the log-sum-exp is
// max + log(sum).
func expRowPadded(row []float32, valid, width int) (mx float32, sum float64) {
	mx = vec.Max(row[:valid])
	v8 := min((valid+7)&^7, len(row))
	for j := valid; j < v8; j++ {
		row[j] = float32(math.Inf(-1))
	}
	sum = vec.ExpSum(row[:v8], row[:v8], 1, mx)
	if v8 < width {
		clear(row[v8:width])
	}
	return mx, sum
}

// queryBlock is the number of queries whose scores the panel path holds at
// once: a multiple of the micro-kernel's rows, small enough that the
// scores above the causal diagonal it computes and drops stay few.
func queryBlock(t int) int { return min(t, 4*gemm.RowsPerTile()) }

// attentionPanels runs one task per (sequence, KV head): the head's keys
// (transposed) and values are packed once, then every query head of the
// group and every block of queries multiplies against them.
func (b *Backend) attentionPanels(qf, kf, vf, of, lf []float32, a backend.Attn) {
	hd, ldq, ldk := a.HeadDim, a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
	group := a.Heads / a.KVHeads
	maxKeys := longestKeys(a)
	qbMax := queryBlock(a.T)
	type scratch struct {
		s, inv []float32
		kt, vp gemm.Panels
	}
	runTasks(b, a.B*a.KVHeads, func() *scratch {
		return &scratch{s: make([]float32, qbMax*((maxKeys+7)&^7)), inv: make([]float32, qbMax)}
	},
		func(task int, sc *scratch) {
			s, kvh := task/a.KVHeads, task%a.KVHeads
			past := a.PastOf(s)
			keys := past + a.T
			base := a.Slot(s)*a.KVRows*ldk + kvh*hd
			sc.kt.Pack(true, hd, keys, kf[base:], ldk)
			sc.vp.Pack(false, keys, hd, vf[base:], ldk)
			for h := kvh * group; h < (kvh+1)*group; h++ {
				qs := qf[s*a.T*ldq+h*hd:]
				os := of[s*a.T*ldq+h*hd:]
				for i0 := 0; i0 < a.T; i0 += qbMax {
					qb := min(qbMax, a.T-i0)
					nk := past + i0 + qb
					ld := (nk + 7) &^ 7 // rows padded for whole vectors of exponentials
					p := sc.s[:qb*ld]
					gemm.MulPanels(false, qb, nk, hd, a.Scale, qs[i0*ldq:], ldq, &sc.kt, false, p, ld)
					for i := range qb {
						mx, sum := expRowPadded(p[i*ld:(i+1)*ld], past+i0+i+1, nk)
						sc.inv[i] = float32(1 / sum)
						if lf != nil {
							lf[(s*a.T+i0+i)*a.Heads+h] = mx + float32(math.Log(sum))
						}
					}
					// O = e^(S−max) V, each row then divided by its sum.
					gemm.MulPanels(false, qb, hd, nk, 1, p, ld, &sc.vp, false, os[i0*ldq:], ldq)
					for i, inv := range sc.inv[:qb] {
						vec.Scale(os[(i0+i)*ldq:(i0+i)*ldq+hd], inv)
					}
				}
			}
		})
}

// attentionByHead runs one task per (sequence, head), queries in blocks of
// qBlock, multiplying against K and V where they lie: the decoding case,
// where packing them would cost more than the products.
func (b *Backend) attentionByHead(qf, kf, vf, of, lf []float32, a backend.Attn) {
	hd, ldq, ldk := a.HeadDim, a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
	group := a.Heads / a.KVHeads
	maxKeys := longestKeys(a)
	runTasks(b, a.B*a.Heads, func() []float32 { return make([]float32, min(qBlock, a.T)*maxKeys) },
		func(task int, sc []float32) {
			s, h := task/a.Heads, task%a.Heads
			kvh := h / group
			past := a.PastOf(s)
			qs := qf[s*a.T*ldq+h*hd:]
			ks := kf[a.Slot(s)*a.KVRows*ldk+kvh*hd:]
			vs := vf[a.Slot(s)*a.KVRows*ldk+kvh*hd:]
			os := of[s*a.T*ldq+h*hd:]
			for i0 := 0; i0 < a.T; i0 += qBlock {
				qb := min(qBlock, a.T-i0)
				nk := past + i0 + qb
				sc := sc[:qb*nk]
				gemm.Serial(false, true, qb, nk, hd, a.Scale, qs[i0*ldq:], ldq, ks, ldk, 0, sc, nk)
				for i := range qb {
					l := softmaxRow(sc[i*nk:(i+1)*nk], past+i0+i+1)
					if lf != nil {
						lf[(s*a.T+i0+i)*a.Heads+h] = l
					}
				}
				gemm.Serial(false, false, qb, hd, nk, 1, sc, nk, vs, ldk, 0, os[i0*ldq:], ldq)
			}
		})
}

// AttentionBackward recomputes the softmax from lse block by block (as a
// flash-attention backward does) and overwrites dq, dk, dv. One task per
// (sequence, KV head), so the query heads sharing a KV head accumulate into
// dk and dv without races; the head's keys and values are packed once for
// all of them.
func (b *Backend) AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v backend.Tensor, a backend.Attn) error {
	const op = "AttentionBackward"
	if err := a.Check(q, k, v); err != nil {
		return err
	}
	nq, nkv := a.B*a.T, backend.Rows(k)
	wq, wkv := a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
	fs, err := mats(op, backend.Need("q", q, nq, wq), backend.Need("k", k, nkv, wkv), backend.Need("v", v, nkv, wkv),
		backend.Need("out", out, nq, wq), backend.Need("dout", dout, nq, wq), backend.Need("lse", lse, nq, a.Heads),
		backend.Need("dq", dq, nq, wq), backend.Need("dk", dk, nkv, wkv), backend.Need("dv", dv, nkv, wkv))
	if err != nil {
		return err
	}
	qf, kf, vf, of, df, lf, dqf, dkf, dvf := fs[0], fs[1], fs[2], fs[3], fs[4], fs[5], fs[6], fs[7], fs[8]
	hd, ldq, ldk := a.HeadDim, wq, wkv
	group := a.Heads / a.KVHeads
	maxKeys := longestKeys(a)
	type scratch struct {
		p, dp, dd  []float32
		kt, vt, kn gemm.Panels // Kᵀ, Vᵀ and K of the head
		qblk, dblk gemm.Panels // the block's queries and output gradients
	}
	qbMax := queryBlock(a.T)
	runTasks(b, a.B*a.KVHeads, func() *scratch {
		return &scratch{p: make([]float32, qbMax*maxKeys), dp: make([]float32, qbMax*maxKeys), dd: make([]float32, qbMax)}
	}, func(task int, sc *scratch) {
		s, kvh := task/a.KVHeads, task%a.KVHeads
		past := a.PastOf(s)
		keys := past + a.T
		base := a.Slot(s)*a.KVRows*ldk + kvh*hd
		ks, vs, dks, dvs := kf[base:], vf[base:], dkf[base:], dvf[base:]
		for r := range a.KVRows {
			clear(dks[r*ldk : r*ldk+hd])
			clear(dvs[r*ldk : r*ldk+hd])
		}
		sc.kt.Pack(true, hd, keys, ks, ldk)
		sc.vt.Pack(true, hd, keys, vs, ldk)
		sc.kn.Pack(false, keys, hd, ks, ldk)
		for h := kvh * group; h < (kvh+1)*group; h++ {
			base := s*a.T*ldq + h*hd
			qs, os, ds, dqs := qf[base:], of[base:], df[base:], dqf[base:]
			for i0 := 0; i0 < a.T; i0 += qbMax {
				qb := min(qbMax, a.T-i0)
				nk := past + i0 + qb
				p, dp := sc.p[:qb*nk], sc.dp[:qb*nk]
				// P = exp(scale·Q Kᵀ − lse)
				gemm.MulPanels(false, qb, nk, hd, a.Scale, qs[i0*ldq:], ldq, &sc.kt, false, p, nk)
				for i := range qb {
					row := p[i*nk : (i+1)*nk]
					valid := past + i0 + i + 1
					vec.ExpSum(row[:valid], row[:valid], 1, lf[(s*a.T+i0+i)*a.Heads+h])
					clear(row[valid:])
				}
				sc.qblk.Pack(false, qb, hd, qs[i0*ldq:], ldq)
				sc.dblk.Pack(false, qb, hd, ds[i0*ldq:], ldq)
				// dV += Pᵀ dO
				gemm.MulPanels(true, nk, hd, qb, 1, p, nk, &sc.dblk, true, dvs, ldk)
				// dP = dO Vᵀ
				gemm.MulPanels(false, qb, nk, hd, 1, ds[i0*ldq:], ldq, &sc.vt, false, dp, nk)
				// dS = P∘(dP − rowsum(dO∘O)), in place of dP; the row sums
				// first, so that their loads of O (not yet in cache) overlap.
				dd := sc.dd[:qb]
				for i := range dd {
					dd[i] = float32(vec.Dot(os[(i0+i)*ldq:(i0+i)*ldq+hd], ds[(i0+i)*ldq:(i0+i)*ldq+hd]))
				}
				for i, c := range dd {
					vec.MulSub(dp[i*nk:(i+1)*nk], p[i*nk:(i+1)*nk], dp[i*nk:(i+1)*nk], c)
				}
				// dQ = scale dS K ; dK += scale dSᵀ Q
				gemm.MulPanels(false, qb, hd, nk, a.Scale, dp, nk, &sc.kn, false, dqs[i0*ldq:], ldq)
				gemm.MulPanels(true, nk, hd, qb, a.Scale, dp, nk, &sc.qblk, true, dks, ldk)
			}
		}
	})
	return nil
}

// longestKeys is the largest number of keys a sequence of the batch attends
// to (its cached past and its new rows).
func longestKeys(a backend.Attn) int {
	n := 0
	for s := range a.B {
		n = max(n, a.PastOf(s)+a.T)
	}
	return n
}
