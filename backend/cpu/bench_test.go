package cpu_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/internal/cputime"
)

// The benchmarks below run the ops at the shapes of the embedded default
// recipe's distillation (recipes/tiny.yaml): a student of hidden 96, 4
// heads of 32 in 2 KV groups, MLP 384, and a teacher of hidden 192, 6
// heads, MLP 768; vocabulary 4000; 16 sequences of 256 tokens (4096 rows),
// logits 256 rows at a time. Each reports its CPU time per op (cpu-ms/op),
// which a loaded machine inflates far less than wall time.

func randTensor(b *testing.B, be backend.Backend, r *rand.Rand, shape ...int) backend.Tensor {
	v := make([]float32, backend.Numel(shape))
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	t, err := be.FromFloat32(v, shape...)
	if err != nil {
		b.Fatal(err)
	}
	return t
}

// measure runs f b.N times and reports CPU time per op and, when flops > 0,
// GFLOP/s of wall time.
func measure(b *testing.B, flops float64, f func() error) {
	if err := f(); err != nil { // warm-up
		b.Fatal(err)
	}
	b.ResetTimer()
	c0 := cputime.Now()
	for range b.N {
		if err := f(); err != nil {
			b.Fatal(err)
		}
	}
	cpu := cputime.Now() - c0
	b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
	if flops > 0 {
		b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	}
}

func BenchmarkMatMulTiny(b *testing.B) {
	for _, c := range []struct {
		name    string
		m, n, k int
		tA, tB  bool
	}{
		{"q-proj", 4096, 128, 96, false, true},
		{"up-proj", 4096, 384, 96, false, true},
		{"down-proj", 4096, 96, 384, false, true},
		{"teacher-up", 4096, 768, 192, false, true},
		{"lm-head", 256, 4000, 96, false, true},
		{"teacher-lm-head", 256, 4000, 192, false, true},
		{"dx-up", 4096, 96, 384, false, false},
		{"dw-up", 384, 96, 4096, true, false},
		{"dx-lm-head", 256, 96, 4000, false, false},
		{"dw-lm-head", 4000, 96, 256, true, false},
	} {
		tr := map[bool]string{false: "N", true: "T"}
		b.Run(fmt.Sprintf("%s/%s%s/%dx%dx%d", c.name, tr[c.tA], tr[c.tB], c.m, c.n, c.k), func(b *testing.B) {
			be := cpu.New()
			r := rand.New(rand.NewPCG(1, 1))
			ash, bsh := []int{c.m, c.k}, []int{c.k, c.n}
			if c.tA {
				ash = []int{c.k, c.m}
			}
			if c.tB {
				bsh = []int{c.n, c.k}
			}
			x, y := randTensor(b, be, r, ash...), randTensor(b, be, r, bsh...)
			z := randTensor(b, be, r, c.m, c.n)
			measure(b, 2*float64(c.m*c.n*c.k), func() error { return be.MatMul(z, x, y, c.tA, c.tB, 1, 1) })
		})
	}
}

func attnFLOPs(a backend.Attn) float64 {
	return 2 * 2 * float64(a.B*a.Heads*a.HeadDim) * float64(a.T*(a.T+1)/2)
}

func BenchmarkAttentionTiny(b *testing.B) {
	for _, c := range []struct {
		name  string
		heads int
		back  bool
	}{{"student", 4, false}, {"teacher", 6, false}, {"student-backward", 4, true}} {
		b.Run(c.name, func(b *testing.B) {
			be := cpu.New()
			r := rand.New(rand.NewPCG(2, 2))
			a := backend.Attn{B: 16, T: 256, Heads: c.heads, KVHeads: 2, HeadDim: 32, KVRows: 256, Scale: float32(1 / math.Sqrt(32))}
			n, wq, wk := a.B*a.T, a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
			q, k, v := randTensor(b, be, r, n, wq), randTensor(b, be, r, n, wk), randTensor(b, be, r, n, wk)
			out, _ := be.New(backend.F32, n, wq)
			lse, _ := be.New(backend.F32, n, a.Heads)
			if !c.back {
				measure(b, attnFLOPs(a), func() error { return be.Attention(out, lse, q, k, v, a) })
				return
			}
			if err := be.Attention(out, lse, q, k, v, a); err != nil {
				b.Fatal(err)
			}
			dout := randTensor(b, be, r, n, wq)
			dq, _ := be.New(backend.F32, n, wq)
			dk, _ := be.New(backend.F32, n, wk)
			dv, _ := be.New(backend.F32, n, wk)
			// Backward recomputes the scores: 5 products of the forward's size, not 2.
			measure(b, 2.5*attnFLOPs(a), func() error { return be.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, a) })
		})
	}
}

func BenchmarkKLDivTiny(b *testing.B) {
	for _, reverse := range []bool{false, true} {
		b.Run(fmt.Sprintf("reverse=%v", reverse), func(b *testing.B) {
			be := cpu.New()
			r := rand.New(rand.NewPCG(3, 3))
			const n, v = 256, 4000
			s, t := randTensor(b, be, r, n, v), randTensor(b, be, r, n, v)
			d, _ := be.New(backend.F32, n, v)
			losses, _ := be.New(backend.F32, n)
			p := backend.KL{Temperature: 1, Reverse: reverse, Scale: 1}
			measure(b, 0, func() error { return be.KLDiv(losses, d, s, t, p) })
		})
	}
}
