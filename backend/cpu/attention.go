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

// Attention computes causal grouped-query attention, one (sequence, head)
// pair per task, queries in blocks of qBlock.
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
	qf, kf, vf, of, lf := fs[0], fs[1], fs[2], fs[3], fs[4]
	hd, ldq, ldk := a.HeadDim, a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
	group := a.Heads / a.KVHeads
	maxKeys := 0
	for s := range a.B {
		maxKeys = max(maxKeys, a.PastOf(s)+a.T)
	}
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
					row := sc[i*nk : (i+1)*nk]
					valid := past + i0 + i + 1
					mx := row[0]
					for _, x := range row[:valid] {
						mx = max(mx, x)
					}
					for j := range row[:valid] {
						row[j] -= mx
					}
					vec.Exp(row[:valid])
					var sum float64
					for _, e := range row[:valid] {
						sum += float64(e)
					}
					inv := float32(1 / sum)
					for j := range row[:valid] {
						row[j] *= inv
					}
					clear(row[valid:])
					if lf != nil {
						lf[(s*a.T+i0+i)*a.Heads+h] = mx + float32(math.Log(sum))
					}
				}
				gemm.Serial(false, false, qb, hd, nk, 1, sc, nk, vs, ldk, 0, os[i0*ldq:], ldq)
			}
		})
	return nil
}

// AttentionBackward recomputes the softmax from lse block by block (as a
// flash-attention backward does) and overwrites dq, dk, dv. One task per
// (sequence, KV head), so the query heads sharing a KV head accumulate into
// dk and dv without races.
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
	maxKeys := 0
	for s := range a.B {
		maxKeys = max(maxKeys, a.PastOf(s)+a.T)
	}
	type scratch struct{ p, dp []float32 }
	qbMax := min(qBlock, a.T)
	runTasks(b, a.B*a.KVHeads, func() scratch {
		return scratch{make([]float32, qbMax*maxKeys), make([]float32, qbMax*maxKeys)}
	}, func(task int, sc scratch) {
		s, kvh := task/a.KVHeads, task%a.KVHeads
		past := a.PastOf(s)
		slot := a.Slot(s)
		ks := kf[slot*a.KVRows*ldk+kvh*hd:]
		vs := vf[slot*a.KVRows*ldk+kvh*hd:]
		dks := dkf[slot*a.KVRows*ldk+kvh*hd:]
		dvs := dvf[slot*a.KVRows*ldk+kvh*hd:]
		for r := range a.KVRows {
			clear(dks[r*ldk : r*ldk+hd])
			clear(dvs[r*ldk : r*ldk+hd])
		}
		for h := kvh * group; h < (kvh+1)*group; h++ {
			base := s*a.T*ldq + h*hd
			qs, os, ds, dqs := qf[base:], of[base:], df[base:], dqf[base:]
			for i0 := 0; i0 < a.T; i0 += qBlock {
				qb := min(qBlock, a.T-i0)
				nk := past + i0 + qb
				p, dp := sc.p[:qb*nk], sc.dp[:qb*nk]
				gemm.Serial(false, true, qb, nk, hd, a.Scale, qs[i0*ldq:], ldq, ks, ldk, 0, p, nk)
				for i := range qb {
					row := p[i*nk : (i+1)*nk]
					valid := past + i0 + i + 1
					l := lf[(s*a.T+i0+i)*a.Heads+h]
					for j := range row[:valid] {
						row[j] -= l
					}
					vec.Exp(row[:valid])
					clear(row[valid:])
				}
				// dV += Pᵀ dO
				gemm.Serial(true, false, nk, hd, qb, 1, p, nk, ds[i0*ldq:], ldq, 1, dvs, ldk)
				// dP = dO Vᵀ
				gemm.Serial(false, true, qb, nk, hd, 1, ds[i0*ldq:], ldq, vs, ldk, 0, dp, nk)
				for i := range qb {
					orow := os[(i0+i)*ldq : (i0+i)*ldq+hd]
					drow := ds[(i0+i)*ldq : (i0+i)*ldq+hd]
					var dsum float64
					for d, x := range orow {
						dsum += float64(x * drow[d])
					}
					dd := float32(dsum)
					prow, dprow := p[i*nk:(i+1)*nk], dp[i*nk:(i+1)*nk]
					for j := range prow {
						dprow[j] = prow[j] * (dprow[j] - dd)
					}
				}
				// dQ = scale dS K ; dK += scale dSᵀ Q
				gemm.Serial(false, false, qb, hd, nk, a.Scale, dp, nk, ks, ldk, 0, dqs[i0*ldq:], ldq)
				gemm.Serial(true, false, nk, hd, qb, a.Scale, dp, nk, qs[i0*ldq:], ldq, 1, dks, ldk)
			}
		}
	})
	return nil
}
