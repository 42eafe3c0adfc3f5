package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/backendtest"
	"github.com/minitron/minitron/backend/cpu"
)

// TestGPUAttentionSplit runs the attention conformance cases with the keys
// of every row tile split in three (flash-decoding: partial results, then
// attention_combine). Attention splits on its own only when few row tiles
// would leave most multiprocessors idle, as batch-1 decoding does, which
// the suite's shapes rarely reach. Runs where the GPU tests run (on a GPU,
// or on the CPU stand-ins through emu_test.go).
func TestGPUAttentionSplit(t *testing.T) {
	b := openGPU(t)
	b.attnSplit = 3
	backendtest.RunOnly(t, func(*testing.T) backend.Backend { return b }, backendtest.BF16, "Attention")
}

// openGPU opens a backend on the GPU (or the stand-ins), closed when the
// test ends, or skips the test without one unless MINITRON_REQUIRE_GPU=1.
func openGPU(t *testing.T) *Backend {
	t.Helper()
	err := Available()
	var b *Backend
	if err == nil {
		b, err = Open(Options{})
	}
	if err != nil {
		if os.Getenv("MINITRON_REQUIRE_GPU") == "1" {
			t.Fatalf("MINITRON_REQUIRE_GPU=1 but no usable GPU: %v", err)
		}
		t.Skipf("no usable GPU: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

// attnRun holds one attention problem's inputs and results on a backend.
type attnRun struct {
	out, lse, dq, dk, dv []float32
}

// runAttention computes attention and its backward on be for a, from
// inputs drawn with seed.
func runAttention(t *testing.T, be backend.Backend, a backend.Attn, seed uint64) attnRun {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	n, nkv, wq, wk := a.B*a.T, a.B*a.KVRows, a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
	up := func(rows, cols int) backend.Tensor {
		v := make([]float32, rows*cols)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		x, err := be.FromFloat32(v, rows, cols)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	zero := func(dt backend.DType, rows, cols int) backend.Tensor {
		x, err := be.New(dt, rows, cols)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	q, k, v, dout := up(n, wq), up(nkv, wk), up(nkv, wk), up(n, wq)
	out, lse := zero(be.FloatDType(), n, wq), zero(backend.F32, n, a.Heads)
	dq, dk, dv := zero(be.FloatDType(), n, wq), zero(be.FloatDType(), nkv, wk), zero(be.FloatDType(), nkv, wk)
	if err := be.Attention(out, lse, q, k, v, a); err != nil {
		t.Fatal(err)
	}
	if err := be.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, a); err != nil {
		t.Fatal(err)
	}
	var res attnRun
	for _, p := range []struct {
		dst *[]float32
		x   backend.Tensor
	}{{&res.out, out}, {&res.lse, lse}, {&res.dq, dq}, {&res.dk, dk}, {&res.dv, dv}} {
		var err error
		if *p.dst, err = be.ToFloat32(p.x); err != nil {
			t.Fatal(err)
		}
	}
	for _, x := range []backend.Tensor{q, k, v, dout, out, lse, dq, dk, dv} {
		be.Free(x)
	}
	return res
}

var relErr = backendtest.RelErr[float32]

// TestGPUAttentionWide compares attention and its gradients with the CPU
// backend at the head dimensions of real models (the suite's are small),
// a padded one (96 in the 128 kernels) and 256, with grouped heads, a KV
// cache and several key and query tiles. Inputs are bf16-rounded for both.
// Tolerances as the suite's BF16 ones: probabilities are rounded to bf16
// before they multiply v, gradients go through a few bf16 roundings.
func TestGPUAttentionWide(t *testing.T) {
	g := openGPU(t)
	c := cpu.New()
	for _, a := range []backend.Attn{
		{B: 1, T: 150, Heads: 6, KVHeads: 2, HeadDim: 64, KVRows: 150},
		{B: 2, T: 70, Heads: 3, KVHeads: 1, HeadDim: 128, KVRows: 90, Past: []int{20, 5}},
		{B: 1, T: 80, Heads: 4, KVHeads: 4, HeadDim: 96, KVRows: 80},
		{B: 1, T: 40, Heads: 2, KVHeads: 1, HeadDim: 256, KVRows: 40},
	} {
		a.Scale = float32(1 / math.Sqrt(float64(a.HeadDim)))
		t.Run(fmt.Sprintf("hd=%d/T=%d/H=%d/KV=%d/past=%v", a.HeadDim, a.T, a.Heads, a.KVHeads, a.Past), func(t *testing.T) {
			want := runAttention(t, c, a, 5)
			got := runAttention(t, g, a, 5)
			for _, x := range []struct {
				name      string
				got, want []float32
				tol       float64
			}{{"out", got.out, want.out, backendtest.BF16.Attention}, {"lse", got.lse, want.lse, backendtest.BF16.Attention},
				{"dq", got.dq, want.dq, backendtest.BF16.Backward}, {"dk", got.dk, want.dk, backendtest.BF16.Backward},
				{"dv", got.dv, want.dv, backendtest.BF16.Backward}} {
				e := relErr(x.got, x.want)
				if !(e <= x.tol) {
					t.Errorf("%s: relative error %.3g > %g", x.name, e, x.tol)
				}
				t.Logf("%s: relative error %.3g", x.name, e)
			}
		})
	}
}

// TestGPUAttentionDeterministic: the backward pass sums dq over key tiles
// in a fixed order, and dk, dv inside one block, so two runs agree bit for
// bit (resumed training depends on it).
func TestGPUAttentionDeterministic(t *testing.T) {
	g := openGPU(t)
	// 5 query tiles of packed rows, each summing dq over up to 3 key tiles.
	a := backend.Attn{B: 1, T: 140, Heads: 4, KVHeads: 2, HeadDim: 32, KVRows: 140, Scale: 0.125}
	r1, r2 := runAttention(t, g, a, 9), runAttention(t, g, a, 9)
	for _, x := range [][2][]float32{{r1.dq, r2.dq}, {r1.dk, r2.dk}, {r1.dv, r2.dv}, {r1.out, r2.out}} {
		for i := range x[0] {
			if math.Float32bits(x[0][i]) != math.Float32bits(x[1][i]) {
				t.Fatalf("element %d differs between two runs: %v, %v", i, x[0][i], x[1][i])
			}
		}
	}
}
