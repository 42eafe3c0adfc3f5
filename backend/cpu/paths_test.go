package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/minitron/minitron/backend"
)

// TestAttentionPanels checks the panel path of Attention (packed keys and
// values, used from panelQueries queries on) against the path that
// multiplies in place (checked against a float64 reference by the
// conformance suite), on shapes that suite leaves to the latter: cached
// keys before the queries, cache slots, blocks of queries that do not
// fill the micro-kernel's rows.
func TestAttentionPanels(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, a := range []backend.Attn{
		{B: 2, T: 9, Heads: 4, KVHeads: 2, HeadDim: 8, KVRows: 20, Past: []int{3, 11}},
		{B: 2, T: 33, Heads: 3, KVHeads: 1, HeadDim: 5, KVRows: 40, Past: []int{0, 7}, Slots: []int{2, 0}},
		{B: 1, T: 100, Heads: 6, KVHeads: 2, HeadDim: 32, KVRows: 100},
	} {
		a.Scale = float32(1 / math.Sqrt(float64(a.HeadDim)))
		t.Run(fmt.Sprintf("B=%d/T=%d/H=%d/KV=%d/hd=%d/past=%v/slots=%v", a.B, a.T, a.Heads, a.KVHeads, a.HeadDim, a.Past, a.Slots), func(t *testing.T) {
			slots := a.B
			for _, s := range a.Slots {
				slots = max(slots, s+1)
			}
			rnd := func(n int) []float32 {
				v := make([]float32, n)
				for i := range v {
					v[i] = float32(r.NormFloat64())
				}
				return v
			}
			wq, wk := a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
			q, k, v := rnd(a.B*a.T*wq), rnd(slots*a.KVRows*wk), rnd(slots*a.KVRows*wk)
			b := New()
			o1, l1 := make([]float32, a.B*a.T*wq), make([]float32, a.B*a.T*a.Heads)
			o2, l2 := make([]float32, len(o1)), make([]float32, len(l1))
			b.attentionPanels(q, k, v, o1, l1, a)
			b.attentionByHead(q, k, v, o2, l2, a)
			for i := range o1 {
				if d := math.Abs(float64(o1[i] - o2[i])); d > 1e-5*(1+math.Abs(float64(o2[i]))) {
					t.Fatalf("out[%d] = %v, want %v", i, o1[i], o2[i])
				}
			}
			for i := range l1 {
				if d := math.Abs(float64(l1[i] - l2[i])); d > 1e-5*(1+math.Abs(float64(l2[i]))) {
					t.Fatalf("lse[%d] = %v, want %v", i, l1[i], l2[i])
				}
			}
		})
	}
}

// TestRoPESharedPositions checks RoPE on a batch whose rows share
// positions (computed from a table of angles per position) against the
// same rows rotated one at a time (angles computed per row; checked
// against a float64 reference by the conformance suite).
func TestRoPESharedPositions(t *testing.T) {
	const seqs, T, width = 3, 7, 2 * 16
	r := backend.RoPE{HeadDim: 16, RotDim: 8, InvFreq: []float32{1, 0.1, 0.01, 0.001}}
	rng := rand.New(rand.NewPCG(4, 4))
	x := make([]float32, seqs*T*width)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	pos := make([]int32, seqs*T)
	for i := range pos {
		pos[i] = int32(i % T)
	}
	b := New()
	for _, inverse := range []bool{false, true} {
		batch := append([]float32(nil), x...)
		bt, _ := b.FromFloat32(batch, seqs*T, width)
		pt, _ := b.FromInt32(pos, seqs*T)
		if err := b.RoPE(bt, pt, r, inverse); err != nil {
			t.Fatal(err)
		}
		for i := range seqs * T {
			row := append([]float32(nil), x[i*width:(i+1)*width]...)
			rt, _ := b.FromFloat32(row, 1, width)
			p1, _ := b.FromInt32([]int32{pos[i]}, 1)
			if err := b.RoPE(rt, p1, r, inverse); err != nil {
				t.Fatal(err)
			}
			for j, v := range row {
				if batch[i*width+j] != v {
					t.Fatalf("inverse=%v: row %d col %d: %v, want %v", inverse, i, j, batch[i*width+j], v)
				}
			}
		}
	}
}
