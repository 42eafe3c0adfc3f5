package cuda

import (
	"fmt"
	"sort"
	"testing"

	"github.com/minitron/minitron/backend"
)

// TestLaunchGeometry runs every op at wide rows (4096 values: the largest
// row blocks, 1024 threads) and at every attention head dimension, split
// and not, on the fake device, and checks each launch against the limits
// of a real GPU that the CPU stand-ins do not have: no block above the
// kernel's __launch_bounds__ (launch refuses those), at most 1024
// threads, grid y and z at most 65535. Every kernel must be launched.
func TestLaunchGeometry(t *testing.T) {
	b, f := fakeBackend(t)
	const n, d, v = 3, 4096, 5000
	mk := func(dt backend.DType, shape ...int) backend.Tensor {
		x, err := b.New(dt, shape...)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	ids, _ := b.FromInt32([]int32{4, 0, 4}, n)
	x, out, dx, w, dw, bias := mk(backend.BF16, n, d), mk(backend.BF16, n, d), mk(backend.BF16, n, d), mk(backend.BF16, d), mk(backend.F32, d), mk(backend.F32, d)
	table, logits, dlogits, losses := mk(backend.BF16, 8, d), mk(backend.BF16, n, v), mk(backend.BF16, n, v), mk(backend.F32, n)
	stats2, stats1 := mk(backend.F32, n, 2), mk(backend.F32, n, 1)
	topIDs, _ := b.FromInt32([]int32{1, 2, 3, 4, 5, 6}, n, 2)
	topLogp := mk(backend.F32, n, 2)
	pos, _ := b.FromInt32([]int32{0, 1, 2}, n)
	kl := backend.KL{Temperature: 1, Scale: 1, Missing: backend.MissingUniform}
	ops := []struct {
		name string
		run  func() error
	}{
		{"Embedding", func() error { return b.Embedding(out, table, ids) }},
		{"EmbeddingBackward", func() error { return b.EmbeddingBackward(table, out, ids) }},
		{"LayerNorm", func() error { return b.LayerNorm(out, stats2, x, w, bias, 1e-5, 1) }},
		{"RMSNorm", func() error { return b.RMSNorm(out, stats1, x, w, 1e-5) }},
		{"LayerNormBackward", func() error { return b.LayerNormBackward(dx, dw, bias, out, x, w, stats2, 1) }},
		{"RMSNormBackward", func() error { return b.RMSNormBackward(dx, dw, out, x, w, stats1) }},
		{"RoPE", func() error {
			return b.RoPE(x, pos, backend.RoPE{HeadDim: 128, RotDim: 64, InvFreq: make([]float32, 32)}, false)
		}},
		{"ReLU2", func() error { return b.ReLU2(out, x) }},
		{"ReLU2Backward", func() error { return b.ReLU2Backward(dx, out, x) }},
		{"SwiGLU", func() error { return b.SwiGLU(out, x, dx) }},
		{"SwiGLUBackward", func() error { return b.SwiGLUBackward(dx, out, x, x, x) }},
		{"Add", func() error { return b.Add(out, x, dx) }},
		{"Scale", func() error { return b.Scale(x, 2) }},
		{"Fill", func() error { return b.Fill(x, 1) }},
		{"Copy", func() error { return b.Copy(dw, w) }},
		{"SquaredNorm", func() error { _, err := b.SquaredNorm(x); return err }},
		{"AdamW", func() error {
			return b.AdamW(w, dw, mk(backend.F32, d), mk(backend.F32, d), backend.AdamW{LR: 1e-3, Beta1: 0.9, Beta2: 0.95, Step: 1, GradScale: 1})
		}},
		{"GatherRows", func() error { return b.GatherRows(out, table, ids) }},
		{"ScatterRows", func() error { return b.ScatterRows(table, out, ids) }},
		{"CosineLoss", func() error { return b.CosineLoss(losses, dx, x, out, 1) }},
		{"CrossEntropy", func() error { return b.CrossEntropy(losses, dlogits, logits, ids, 1) }},
		{"KLDiv", func() error { return b.KLDiv(losses, dlogits, logits, dlogits, kl) }},
		{"KLTopK", func() error { return b.KLTopK(losses, dlogits, logits, topIDs, topLogp, kl) }},
	}
	for _, hd := range []int{32, 64, 96, 128, 256} {
		for _, split := range []int{0, 3} {
			a := backend.Attn{B: 2, T: 70, Heads: 4, KVHeads: 2, HeadDim: hd, KVRows: 90, Past: []int{20, 3}, Scale: 0.1}
			ops = append(ops, struct {
				name string
				run  func() error
			}{fmt.Sprintf("Attention/hd=%d/split=%d", hd, split), func() error {
				q, o, dq := mk(backend.BF16, a.B*a.T, a.Heads*hd), mk(backend.BF16, a.B*a.T, a.Heads*hd), mk(backend.BF16, a.B*a.T, a.Heads*hd)
				k, vv := mk(backend.BF16, a.B*a.KVRows, a.KVHeads*hd), mk(backend.BF16, a.B*a.KVRows, a.KVHeads*hd)
				lse := mk(backend.F32, a.B*a.T, a.Heads)
				b.attnSplit = split
				defer func() { b.attnSplit = 0 }()
				if err := b.Attention(o, lse, q, k, vv, a); err != nil {
					return err
				}
				return b.AttentionBackward(dq, k, vv, o, o, lse, q, k, vv, a)
			}})
		}
	}
	for _, op := range ops {
		if err := op.run(); err != nil {
			t.Errorf("%s: %v", op.name, err)
		}
	}
	launched := map[string]bool{}
	for _, l := range f.launches {
		launched[l.name] = true
		threads := l.block[0] * l.block[1] * l.block[2]
		if k := b.kern[l.name]; k.MaxThreads == 0 || int(threads) > k.MaxThreads {
			t.Errorf("%s: block %v, launch bounds %d", l.name, l.block, k.MaxThreads)
		}
		if l.grid[1] > 65535 || l.grid[2] > 65535 || l.grid[0] > 1<<31-1 {
			t.Errorf("%s: grid %v", l.name, l.grid)
		}
	}
	var missing []string
	for name := range b.kern {
		if !launched[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("kernels no op launched: %v", missing)
	}
	// The widest rows get the most threads the row kernels allow.
	for _, l := range f.launches {
		if l.name == "layernorm" && l.block[0] != 1024 {
			t.Errorf("layernorm of %d values: block %v, want 1024 threads", d, l.block)
		}
	}
}

func TestBlockRegisters(t *testing.T) {
	for _, c := range []struct{ regs, threads, want int }{
		{255, 256, 65536}, // the most a block may hold: fits
		{64, 1024, 65536},
		{65, 1024, 73728}, // 2080 registers a warp, allocated as 2304
		{40, 33, 2 * 1280},
	} {
		if got := blockRegisters(c.regs, c.threads); got != c.want {
			t.Errorf("%d registers × %d threads: %d, want %d", c.regs, c.threads, got, c.want)
		}
	}
}

// Norm weight gradients sum rows in chunks, one grid row each: past 4M
// rows (65535 chunks of 64) the chunks grow instead of the grid.
func TestNormBackwardManyRows(t *testing.T) {
	b, f := fakeBackend(t)
	for _, n := range []int{64 * maxGridY, 64*maxGridY + 1, 3 * 64 * maxGridY} {
		x, _ := b.New(backend.BF16, n, 1)
		w, _ := b.New(backend.F32, 1)
		dw, _ := b.New(backend.F32, 1)
		stats, _ := b.New(backend.F32, n, 1)
		f.launches = nil
		if err := b.RMSNormBackward(x, dw, x, x, w, stats); err != nil {
			t.Fatal(err)
		}
		l := f.launches[0]
		per := int(l.args[7].bits)
		if l.name != "norm_backward_dw_partial" || l.grid[1] > maxGridY || int(l.grid[1])*per < n || per < normRowsPerChunk {
			t.Errorf("%d rows: %s grid %v, %d rows a chunk", n, l.name, l.grid, per)
		}
		for _, x := range []backend.Tensor{x, w, dw, stats} {
			b.Free(x)
		}
	}
}
