// Package backendtest is the conformance suite every backend runs: each op
// against a float64 reference written from its definition, each backward op
// against central finite differences of that reference, on several shapes
// with odd sizes, plus error cases that must not panic.
//
// A backend's test calls Run with a constructor and its tolerances.
package backendtest

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/minitron/minitron/backend"
)

// Tolerances bound the relative error ‖got−ref‖/‖ref‖ of each op family.
type Tolerances struct {
	MatMul     float64
	Norm       float64
	RoPE       float64
	Attention  float64
	Activation float64
	Loss       float64
	// Backward covers every gradient compared with finite differences.
	Backward float64
	// Update covers weights after optimizer steps (moments are float32
	// everywhere and always held to 1e-5).
	Update float64
}

// F32 are the tolerances of a float32 backend. Products and sums of a few
// hundred float32 terms lose a few ulps (~1e-7 each); 1e-5 leaves room for
// sqrt(n) growth at the sizes tested while catching any real mistake, whose
// error is O(1). Backward passes compare with finite differences whose own
// error is ~1e-8 relative, so 1e-4 is dominated by float32 rounding.
var F32 = Tolerances{MatMul: 1e-5, Norm: 1e-5, RoPE: 1e-5, Attention: 1e-5, Activation: 1e-6, Loss: 1e-5, Backward: 1e-4, Update: 1e-5}

// BF16 are the tolerances of a backend storing tensors in bfloat16 and
// computing in float32. Every bf16 output carries a rounding error of up
// to 2⁻⁹ relative (8 significant bits), ~1.1e-3 in the ‖·‖ norm over many
// elements; 4e-3 leaves room for inputs that are themselves rounded
// intermediates (a norm's output feeds its own weight product). Attention
// rounds the probabilities it multiplies with v to bf16 as flash kernels
// do, hence 1e-2; gradients go through two or three bf16 roundings of
// intermediates, hence 2e-2. Losses are float32 rows computed from bf16
// inputs the reference also sees, so only accumulation order remains.
// Weights after an optimizer step are rounded (stochastically) to bf16.
var BF16 = Tolerances{MatMul: 4e-3, Norm: 4e-3, RoPE: 4e-3, Attention: 1e-2, Activation: 4e-3, Loss: 1e-4, Backward: 2e-2, Update: 4e-3}

type suite struct {
	t   *testing.T
	b   backend.Backend
	tol Tolerances
	r   *rand.Rand
}

// Run runs the whole suite against the backend made by mk.
func Run(t *testing.T, mk func(t *testing.T) backend.Backend, tol Tolerances) {
	RunOnly(t, mk, tol)
}

// RunOnly runs the named parts of the suite ("MatMul", "Rows", "Errors",
// ...), or all of it when no names are given.
func RunOnly(t *testing.T, mk func(t *testing.T) backend.Backend, tol Tolerances, names ...string) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	ran := 0
	for _, c := range []struct {
		name string
		f    func(s *suite)
	}{
		{"MatMul", (*suite).matMul},
		{"Embedding", (*suite).embedding},
		{"LayerNorm", (*suite).layerNorm},
		{"RMSNorm", (*suite).rmsNorm},
		{"RoPE", (*suite).rope},
		{"Attention", (*suite).attention},
		{"AttentionBackward", (*suite).attentionBackward},
		{"Activations", (*suite).activations},
		{"Rows", (*suite).rows},
		{"CrossEntropy", (*suite).crossEntropy},
		{"CosineLoss", (*suite).cosineLoss},
		{"Optimizer", (*suite).optimizer},
		{"SquaredNorm", (*suite).squaredNorm},
		{"MasterWeights", (*suite).masterWeights},
		{"InfLogits", (*suite).infLogits},
		{"KLDiv", (*suite).klDiv},
		{"KLTopK", (*suite).klTopK},
		{"Errors", (*suite).errors},
	} {
		if len(want) > 0 && !want[c.name] {
			continue
		}
		ran++
		t.Run(c.name, func(t *testing.T) {
			c.f(&suite{t: t, b: mk(t), tol: tol, r: rand.New(rand.NewPCG(7, uint64(len(c.name))))})
		})
	}
	if len(want) > 0 && ran != len(want) {
		t.Fatalf("backendtest: %d of the parts %v exist", ran, names)
	}
}

// run runs f as a subtest with its own *testing.T.
func (s *suite) run(name string, f func(s *suite)) {
	s.t.Run(name, func(t *testing.T) {
		c := *s
		c.t = t
		f(&c)
	})
}

func (s *suite) randn(n int) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = s.r.NormFloat64()
	}
	return x
}

// up uploads x and returns the tensor and the values the backend holds
// (rounded to its float dtype), which references must use.
func (s *suite) up(x []float64, shape ...int) (backend.Tensor, []float64) {
	s.t.Helper()
	f := make([]float32, len(x))
	for i, v := range x {
		f[i] = float32(v)
	}
	t, err := s.b.FromFloat32(f, shape...)
	if err != nil {
		s.t.Fatal(err)
	}
	return t, s.down(t)
}

func (s *suite) upInt(x []int32, shape ...int) backend.Tensor {
	s.t.Helper()
	t, err := s.b.FromInt32(append([]int32(nil), x...), shape...)
	if err != nil {
		s.t.Fatal(err)
	}
	return t
}

// zeros makes a zero tensor in the backend's float dtype.
func (s *suite) zeros(shape ...int) backend.Tensor {
	s.t.Helper()
	return s.zerosOf(s.b.FloatDType(), shape...)
}

// zeros32 makes a zero tensor with float32 storage, as callers ask for
// statistics, log-sum-exp, losses and optimizer moments.
func (s *suite) zeros32(shape ...int) backend.Tensor {
	s.t.Helper()
	return s.zerosOf(backend.F32, shape...)
}

func (s *suite) zerosOf(dt backend.DType, shape ...int) backend.Tensor {
	s.t.Helper()
	t, err := s.b.New(dt, shape...)
	if err != nil {
		s.t.Fatal(err)
	}
	return t
}

func (s *suite) down(t backend.Tensor) []float64 {
	s.t.Helper()
	f, err := s.b.ToFloat32(t)
	if err != nil {
		s.t.Fatal(err)
	}
	x := make([]float64, len(f))
	for i, v := range f {
		x[i] = float64(v)
	}
	return x
}

// do fails the test on an error. An op the backend does not implement
// fails too, named by the case it was met in: every backend implements
// every op, and a gap must not pass as a skipped case.
func (s *suite) do(err error) {
	s.t.Helper()
	if errors.Is(err, backend.ErrNotImplemented) {
		s.t.Fatalf("%s: the backend does not implement this op (%v)", s.t.Name(), err)
	}
	if err != nil {
		s.t.Fatal(err)
	}
}

// rounded returns x rounded to what a tensor of dtype dt holds.
func rounded(dt backend.DType, x []float64) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		switch dt {
		case backend.BF16:
			out[i] = float64(backend.BF16ToF32(backend.F32ToBF16(float32(v))))
		case backend.F16:
			out[i] = float64(backend.F16ToF32(backend.F32ToF16(float32(v))))
		default:
			out[i] = float64(float32(v))
		}
	}
	return out
}

// RelErr returns ‖got−want‖/‖want‖ (absolute error when want is zero),
// summed in float64.
func RelErr[T float32 | float64](got, want []T) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

func (s *suite) close(what string, got, want []float64, tol float64) {
	s.t.Helper()
	if len(got) != len(want) {
		s.t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i, g := range got {
		if math.IsNaN(g) || math.IsInf(g, 0) {
			s.t.Fatalf("%s: element %d is %v", what, i, g)
		}
	}
	if e := RelErr(got, want); e > tol {
		s.t.Errorf("%s: relative error %.3g > %.3g", what, e, tol)
	}
}

func add(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] + b[i]
	}
	return out
}

func (s *suite) matMul() {
	for _, sh := range [][3]int{{1, 1, 1}, {3, 5, 7}, {1, 100, 33}, {17, 33, 9}, {64, 48, 80}, {130, 70, 257}} {
		m, n, k := sh[0], sh[1], sh[2]
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			for _, ab := range [][2]float32{{1, 0}, {0.5, 1}} {
				s.run(fmt.Sprintf("%dx%dx%d/tA=%v/tB=%v/beta=%v", m, n, k, tr[0], tr[1], ab[1]), func(s *suite) {
					ash, bsh := []int{m, k}, []int{k, n}
					if tr[0] {
						ash = []int{k, m}
					}
					if tr[1] {
						bsh = []int{n, k}
					}
					a, av := s.up(s.randn(m*k), ash...)
					b, bv := s.up(s.randn(k*n), bsh...)
					c, cv := s.up(s.randn(m*n), m, n)
					s.do(s.b.MatMul(c, a, b, tr[0], tr[1], ab[0], ab[1]))
					want := refMatMul(av, bv, m, n, k, tr[0], tr[1])
					for i := range want {
						want[i] = float64(ab[0])*want[i] + float64(ab[1])*cv[i]
					}
					s.close("c", s.down(c), want, s.tol.MatMul)
				})
			}
		}
	}
}

func (s *suite) embedding() {
	const v, d = 11, 7
	table, tv := s.up(s.randn(v*d), v, d)
	ids := []int32{3, 0, 10, 3, 5}
	out := s.zeros(len(ids), d)
	s.do(s.b.Embedding(out, table, s.upInt(ids, len(ids))))
	want := make([]float64, len(ids)*d)
	for i, id := range ids {
		copy(want[i*d:], tv[int(id)*d:int(id+1)*d])
	}
	s.close("out", s.down(out), want, 0)

	dout, dv := s.up(s.randn(len(ids)*d), len(ids), d)
	dtable, init := s.up(s.randn(v*d), v, d)
	s.do(s.b.EmbeddingBackward(dtable, dout, s.upInt(ids, len(ids))))
	for i, id := range ids {
		for j := range d {
			init[int(id)*d+j] += dv[i*d+j]
		}
	}
	s.close("dtable", s.down(dtable), init, s.tol.Backward)
}

func (s *suite) layerNorm() {
	for _, c := range []struct {
		n, d    int
		bias    bool
		off     float64
		rowMean float64
	}{{5, 7, true, 1, 0}, {3, 64, false, 0, 3}, {33, 80, true, 1, -2}, {1, 1000, true, 0, 0.5}} {
		s.run(fmt.Sprintf("%dx%d/bias=%v/off=%v", c.n, c.d, c.bias, c.off), func(s *suite) {
			n, d := c.n, c.d
			x0 := s.randn(n * d)
			for i := range x0 {
				x0[i] += c.rowMean
			}
			x, xv := s.up(x0, n, d)
			w, wv := s.up(s.randn(d), d)
			var bias backend.Tensor
			var bv []float64
			if c.bias {
				bias, bv = s.up(s.randn(d), d)
			}
			const eps = 1e-5
			out, stats := s.zeros(n, d), s.zeros32(n, 2)
			s.do(s.b.LayerNorm(out, stats, x, w, bias, eps, float32(c.off)))
			s.close("out", s.down(out), refLayerNorm(xv, wv, bv, d, eps, c.off), s.tol.Norm)

			dout, gv := s.up(s.randn(n*d), n, d)
			dx := s.zeros(n, d)
			dw, dw0 := s.up(s.randn(d), d)
			var db backend.Tensor
			var db0 []float64
			if c.bias {
				db, db0 = s.up(s.randn(d), d)
			}
			s.do(s.b.LayerNormBackward(dx, dw, db, dout, x, w, stats, float32(c.off)))
			if n*d > 3000 {
				return // finite differences over this many inputs are slow; smaller cases cover the math
			}
			s.close("dx", s.down(dx), numGrad(func(x []float64) []float64 { return refLayerNorm(x, wv, bv, d, eps, c.off) }, xv, gv), s.tol.Backward)
			s.close("dw", s.down(dw), add(dw0, numGrad(func(w []float64) []float64 { return refLayerNorm(xv, w, bv, d, eps, c.off) }, wv, gv)), s.tol.Backward)
			if c.bias {
				s.close("dbias", s.down(db), add(db0, numGrad(func(b []float64) []float64 { return refLayerNorm(xv, wv, b, d, eps, c.off) }, bv, gv)), s.tol.Backward)
			}
		})
	}
}

func (s *suite) rmsNorm() {
	for _, sh := range [][2]int{{5, 7}, {3, 64}, {33, 80}} {
		s.run(fmt.Sprintf("%dx%d", sh[0], sh[1]), func(s *suite) {
			n, d := sh[0], sh[1]
			x, xv := s.up(s.randn(n*d), n, d)
			w, wv := s.up(s.randn(d), d)
			const eps = 1e-6
			out, stats := s.zeros(n, d), s.zeros32(n)
			s.do(s.b.RMSNorm(out, stats, x, w, eps))
			s.close("out", s.down(out), refRMSNorm(xv, wv, d, eps), s.tol.Norm)
			dout, gv := s.up(s.randn(n*d), n, d)
			dx := s.zeros(n, d)
			dw, dw0 := s.up(s.randn(d), d)
			s.do(s.b.RMSNormBackward(dx, dw, dout, x, w, stats))
			s.close("dx", s.down(dx), numGrad(func(x []float64) []float64 { return refRMSNorm(x, wv, d, eps) }, xv, gv), s.tol.Backward)
			s.close("dw", s.down(dw), add(dw0, numGrad(func(w []float64) []float64 { return refRMSNorm(xv, w, d, eps) }, wv, gv)), s.tol.Backward)
		})
	}
}

// InvFreq returns the default RoPE inverse frequencies theta^(-2i/rotDim).
func invFreq(rotDim int, theta float64) []float32 {
	f := make([]float32, rotDim/2)
	for i := range f {
		f[i] = float32(math.Pow(theta, -float64(2*i)/float64(rotDim)))
	}
	return f
}

func (s *suite) rope() {
	for _, c := range []struct{ n, heads, hd, rot int }{{6, 3, 8, 4}, {5, 2, 16, 16}, {9, 1, 10, 6}} {
		s.run(fmt.Sprintf("n=%d/heads=%d/hd=%d/rot=%d", c.n, c.heads, c.hd, c.rot), func(s *suite) {
			r := backend.RoPE{HeadDim: c.hd, RotDim: c.rot, InvFreq: invFreq(c.rot, 10000)}
			width := c.heads * c.hd
			pos := make([]int32, c.n)
			for i := range pos {
				pos[i] = int32(s.r.IntN(4096))
			}
			x, xv := s.up(s.randn(c.n*width), c.n, width)
			p := s.upInt(pos, c.n)
			s.do(s.b.RoPE(x, p, r, false))
			s.close("forward", s.down(x), refRoPE(xv, pos, width, r, false), s.tol.RoPE)
			// The backward pass is the inverse rotation of the incoming gradient.
			g, gv := s.up(s.randn(c.n*width), c.n, width)
			s.do(s.b.RoPE(g, p, r, true))
			s.close("backward", s.down(g), numGrad(func(x []float64) []float64 { return refRoPE(x, pos, width, r, false) }, xv, gv), s.tol.Backward)
		})
	}
}

func attnCases() []backend.Attn {
	return []backend.Attn{
		{B: 2, T: 5, Heads: 4, KVHeads: 2, HeadDim: 8, KVRows: 5},
		{B: 1, T: 70, Heads: 3, KVHeads: 1, HeadDim: 5, KVRows: 70},
		{B: 1, T: 130, Heads: 2, KVHeads: 2, HeadDim: 16, KVRows: 130},
		{B: 2, T: 3, Heads: 2, KVHeads: 1, HeadDim: 4, KVRows: 9, Past: []int{2, 6}},
		{B: 3, T: 1, Heads: 4, KVHeads: 4, HeadDim: 6, KVRows: 7, Past: []int{0, 3, 6}},
		{B: 2, T: 2, Heads: 4, KVHeads: 2, HeadDim: 8, KVRows: 6, Past: []int{1, 4}, Slots: []int{3, 0}},
	}
}

func (s *suite) attention() {
	for _, a := range attnCases() {
		a.Scale = float32(1 / math.Sqrt(float64(a.HeadDim)))
		s.run(fmt.Sprintf("B=%d/T=%d/H=%d/KV=%d/hd=%d/past=%v", a.B, a.T, a.Heads, a.KVHeads, a.HeadDim, a.Past), func(s *suite) {
			wq, wk := a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
			slots := a.B
			for _, sl := range a.Slots {
				slots = max(slots, sl+1)
			}
			q, qv := s.up(s.randn(a.B*a.T*wq), a.B*a.T, wq)
			k, kv := s.up(s.randn(slots*a.KVRows*wk), slots*a.KVRows, wk)
			v, vv := s.up(s.randn(slots*a.KVRows*wk), slots*a.KVRows, wk)
			out, lse := s.zeros(a.B*a.T, wq), s.zeros32(a.B*a.T, a.Heads)
			s.do(s.b.Attention(out, lse, q, k, v, a))
			wo, wl := refAttention(qv, kv, vv, a)
			s.close("out", s.down(out), wo, s.tol.Attention)
			s.close("lse", s.down(lse), wl, s.tol.Attention)
		})
	}
}

func (s *suite) attentionBackward() {
	cases := []backend.Attn{
		{B: 2, T: 5, Heads: 4, KVHeads: 2, HeadDim: 4, KVRows: 5},
		{B: 1, T: 67, Heads: 2, KVHeads: 1, HeadDim: 3, KVRows: 67},
		{B: 2, T: 3, Heads: 2, KVHeads: 1, HeadDim: 4, KVRows: 9, Past: []int{2, 6}},
	}
	for _, a := range cases {
		a.Scale = float32(1 / math.Sqrt(float64(a.HeadDim)))
		s.run(fmt.Sprintf("B=%d/T=%d/H=%d/KV=%d/hd=%d/past=%v", a.B, a.T, a.Heads, a.KVHeads, a.HeadDim, a.Past), func(s *suite) {
			wq, wk := a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
			q, qv := s.up(s.randn(a.B*a.T*wq), a.B*a.T, wq)
			k, kv := s.up(s.randn(a.B*a.KVRows*wk), a.B*a.KVRows, wk)
			v, vv := s.up(s.randn(a.B*a.KVRows*wk), a.B*a.KVRows, wk)
			out, lse := s.zeros(a.B*a.T, wq), s.zeros32(a.B*a.T, a.Heads)
			s.do(s.b.Attention(out, lse, q, k, v, a))
			dout, gv := s.up(s.randn(a.B*a.T*wq), a.B*a.T, wq)
			dq, dk, dv := s.zeros(a.B*a.T, wq), s.zeros(a.B*a.KVRows, wk), s.zeros(a.B*a.KVRows, wk)
			s.do(s.b.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, a))
			f := func(q, k, v []float64) []float64 { o, _ := refAttention(q, k, v, a); return o }
			s.close("dq", s.down(dq), numGrad(func(x []float64) []float64 { return f(x, kv, vv) }, qv, gv), s.tol.Backward)
			s.close("dk", s.down(dk), numGrad(func(x []float64) []float64 { return f(qv, x, vv) }, kv, gv), s.tol.Backward)
			s.close("dv", s.down(dv), numGrad(func(x []float64) []float64 { return f(qv, kv, x) }, vv, gv), s.tol.Backward)
		})
	}
}

func (s *suite) activations() {
	const n = 37
	x0 := s.randn(n)
	x0[0], x0[1] = 0, -0.5 // the kink of relu² and a negative
	relu2 := func(x []float64) []float64 {
		o := make([]float64, len(x))
		for i, v := range x {
			o[i] = math.Max(v, 0) * math.Max(v, 0)
		}
		return o
	}
	silu := func(g float64) float64 { return g / (1 + math.Exp(-g)) }
	swiglu := func(g, u []float64) []float64 {
		o := make([]float64, len(g))
		for i := range g {
			o[i] = silu(g[i]) * u[i]
		}
		return o
	}
	x, xv := s.up(x0, n)
	out := s.zeros(n)
	s.do(s.b.ReLU2(out, x))
	s.close("relu2", s.down(out), relu2(xv), s.tol.Activation)
	dout, gv := s.up(s.randn(n), n)
	dx := s.zeros(n)
	s.do(s.b.ReLU2Backward(dx, dout, x))
	s.close("relu2 backward", s.down(dx), numGrad(relu2, xv, gv), s.tol.Backward)

	u, uv := s.up(s.randn(n), n)
	s.do(s.b.SwiGLU(out, x, u))
	s.close("swiglu", s.down(out), swiglu(xv, uv), s.tol.Activation)
	dg, du := s.zeros(n), s.zeros(n)
	s.do(s.b.SwiGLUBackward(dg, du, dout, x, u))
	s.close("swiglu dgate", s.down(dg), numGrad(func(g []float64) []float64 { return swiglu(g, uv) }, xv, gv), s.tol.Backward)
	s.close("swiglu dup", s.down(du), numGrad(func(u []float64) []float64 { return swiglu(xv, u) }, uv, gv), s.tol.Backward)

	// In place, as the model uses them.
	s.do(s.b.Add(u, u, x))
	s.close("add in place", s.down(u), add(uv, xv), s.tol.Activation)
	s.do(s.b.ReLU2(x, x))
	s.close("relu2 in place", s.down(x), relu2(xv), s.tol.Activation)
}

func (s *suite) rows() {
	const d = 5
	src, sv := s.up(s.randn(3*d), 3, d)
	dst, dv := s.up(s.randn(8*d), 8, d)
	rows := []int32{6, 1, 4}
	s.do(s.b.ScatterRows(dst, src, s.upInt(rows, 3)))
	for i, r := range rows {
		copy(dv[int(r)*d:], sv[i*d:(i+1)*d])
	}
	s.close("scatter", s.down(dst), dv, 0)
	g := s.zeros(2, d)
	s.do(s.b.GatherRows(g, dst, s.upInt([]int32{4, 0}, 2)))
	s.close("gather", s.down(g), append(append([]float64{}, dv[4*d:5*d]...), dv[0:d]...), 0)

	c := s.zeros(2, d)
	s.do(s.b.Copy(c, g))
	s.close("copy", s.down(c), s.down(g), 0)
	s.do(s.b.Fill(c, 2.5))
	for _, v := range s.down(c) {
		if v != 2.5 {
			s.t.Fatalf("fill: %v", v)
		}
	}
	for _, z := range []backend.Tensor{s.zeros(2, d), s.zeros32(2, d)} {
		vals := s.randn(2 * d)
		f := make([]float32, len(vals))
		for i, x := range vals {
			f[i] = float32(x)
			vals[i] = float64(f[i])
		}
		s.do(s.b.Write(z, f))
		tol := 0.0
		if z.DType() != backend.F32 {
			tol = s.tol.Activation // rounded to the storage type
		}
		s.close("write "+z.DType().String(), s.down(z), vals, tol)
		s.do(s.b.Copy(c, z)) // Copy converts between float storages, rounding to c's
		s.close("copy from "+z.DType().String(), s.down(c), rounded(c.DType(), s.down(z)), 0)
	}
	if err := s.b.Write(c, make([]float32, 3)); err == nil {
		s.t.Fatalf("Write of 3 values into a [2,%d] tensor: no error", d)
	}
	view, err := s.b.View(dst, d, 2, d)
	s.do(err)
	s.close("view", s.down(view), dv[d:3*d], 0)
	s.do(s.b.Fill(view, 0))
	if got := s.down(dst); got[d] != 0 || got[3*d-1] != 0 || got[3*d] != dv[3*d] {
		s.t.Fatalf("a view does not share storage with its tensor")
	}
}

func (s *suite) cosineLoss() {
	for _, sh := range [][2]int{{1, 1}, {3, 7}, {5, 33}, {2, 300}} {
		n, d := sh[0], sh[1]
		s.run(fmt.Sprintf("%dx%d", n, d), func(s *suite) {
			u, uv := s.up(s.randn(n*d), n, d)
			vvals := s.randn(n * d)
			for i := range vvals[:d] { // one row nearly parallel to u: cos near 1
				vvals[i] = 2*uv[i] + 0.01*vvals[i]
			}
			v, vv := s.up(vvals, n, d)
			losses, du := s.zeros32(n), s.zeros(n, d)
			const scale = 0.5
			s.do(s.b.CosineLoss(losses, du, u, v, scale))
			want := refCosine(uv, vv, d)
			s.close("losses", s.down(losses), want, s.tol.Loss+1e-6)
			w := make([]float64, n)
			for i := range w {
				w[i] = scale
			}
			s.close("du", s.down(du), numGrad(func(x []float64) []float64 { return refCosine(x, vv, d) }, uv, w), s.tol.Backward)
			s.do(s.b.CosineLoss(losses, u, u, v, scale)) // du may overwrite u
			s.close("du in place", s.down(u), s.down(du), s.tol.Activation)
		})
	}
	if err := s.b.CosineLoss(s.zeros32(2), nil, s.zeros(2, 3), s.zeros(2, 4), 1); err == nil {
		s.t.Fatal("CosineLoss with u [2,3] and v [2,4]: no error")
	}
}

func (s *suite) crossEntropy() {
	const n, v = 5, 13
	lg, lv := s.up(s.randn(n*v), n, v)
	targets := []int32{3, 0, -1, 12, 7}
	tg := s.upInt(targets, n)
	losses, dl := s.zeros32(n), s.zeros(n, v)
	const scale = 0.25
	s.do(s.b.CrossEntropy(losses, dl, lg, tg, scale))
	s.close("losses", s.down(losses), refCrossEntropy(lv, targets, v), s.tol.Loss)
	ones := make([]float64, n)
	for i := range ones {
		ones[i] = scale
	}
	s.close("dlogits", s.down(dl), numGrad(func(x []float64) []float64 { return refCrossEntropy(x, targets, v) }, lv, ones), s.tol.Backward)
	// dlogits may overwrite logits.
	s.do(s.b.CrossEntropy(losses, lg, lg, tg, scale))
	s.close("dlogits in place", s.down(lg), s.down(dl), s.tol.Loss)
}

// errors checks that bad arguments are errors, never panics.
func (s *suite) errors() {
	a := s.zeros(3, 4)
	bb := s.zeros(5, 6)
	c := s.zeros(3, 6)
	cases := map[string]func() error{
		"matmul inner mismatch": func() error { return s.b.MatMul(c, a, bb, false, false, 1, 0) },
		"embedding id out of range": func() error {
			return s.b.Embedding(s.zeros(1, 4), s.zeros(2, 4), s.upInt([]int32{2}, 1))
		},
		"cross entropy target out of range": func() error {
			return s.b.CrossEntropy(s.zeros(1), nil, s.zeros(1, 4), s.upInt([]int32{4}, 1), 1)
		},
		"attention bad grouping": func() error {
			q := s.zeros(2, 6)
			return s.b.Attention(q, nil, q, q, q, backend.Attn{B: 1, T: 2, Heads: 3, KVHeads: 2, HeadDim: 2, KVRows: 2, Scale: 1})
		},
		"attention duplicate slots": func() error {
			q, kv := s.zeros(2, 4), s.zeros(6, 4)
			return s.b.Attention(q, nil, q, kv, kv, backend.Attn{B: 2, T: 1, Heads: 1, KVHeads: 1, HeadDim: 4, KVRows: 3, Past: []int{0, 0}, Slots: []int{1, 1}, Scale: 1})
		},
		"attention past beyond cache": func() error {
			q, kv := s.zeros(1, 4), s.zeros(3, 4)
			return s.b.Attention(q, nil, q, kv, kv, backend.Attn{B: 1, T: 1, Heads: 1, KVHeads: 1, HeadDim: 4, KVRows: 3, Past: []int{3}, Scale: 1})
		},
		"view out of range":  func() error { _, err := s.b.View(a, 10, 2, 2); return err },
		"add shape mismatch": func() error { return s.b.Add(a, a, c) },
		"layernorm weight size": func() error {
			return s.b.LayerNorm(a, nil, a, s.zeros(3), nil, 1e-5, 0)
		},
	}
	for name, f := range cases {
		s.run(name, func(s *suite) {
			defer func() {
				if r := recover(); r != nil {
					s.t.Fatalf("panic: %v", r)
				}
			}()
			if err := f(); err == nil {
				s.t.Fatal("no error")
			}
		})
	}
}

func (s *suite) optimizer() {
	const n = 1000
	g, gv := s.up(s.randn(n), n)
	ss, err := s.b.SquaredNorm(g)
	s.do(err)
	var want float64
	for _, x := range gv {
		want += x * x
	}
	if math.Abs(ss-want) > 1e-6*want {
		s.t.Fatalf("squared norm %v, want %v", ss, want)
	}
	// Two AdamW steps against the update written out in float64.
	w, wv := s.up(s.randn(n), n)
	m, v := s.zeros32(n), s.zeros32(n)
	mv, vv := make([]float64, n), make([]float64, n)
	p := backend.AdamW{LR: 0.01, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, GradScale: 0.5}
	for step := 1; step <= 2; step++ {
		p.Step = step
		s.do(s.b.AdamW(w, g, m, v, p))
		b1, b2 := float64(p.Beta1), float64(p.Beta2)
		for i := range wv {
			gi := gv[i] * float64(p.GradScale)
			mv[i] = b1*mv[i] + (1-b1)*gi
			vv[i] = b2*vv[i] + (1-b2)*gi*gi
			bc1, bc2 := 1-math.Pow(b1, float64(step)), 1-math.Pow(b2, float64(step))
			wv[i] = wv[i]*(1-float64(p.LR)*float64(p.WeightDecay)) - float64(p.LR)/bc1*mv[i]/(math.Sqrt(vv[i])/math.Sqrt(bc2)+float64(p.Eps))
		}
	}
	s.close("adamw w", s.down(w), wv, s.tol.Update)
	s.close("adamw m", s.down(m), mv, 1e-5)
	s.close("adamw v", s.down(v), vv, 1e-5)
	s.do(s.b.Scale(g, -2))
	for i := range gv {
		gv[i] *= -2
	}
	s.close("scale", s.down(g), gv, 0)
}

func (s *suite) klDiv() {
	const n, v = 4, 11
	for _, c := range []struct {
		T       float32
		reverse bool
	}{{1, false}, {2, false}, {1, true}, {0.5, true}} {
		s.run(fmt.Sprintf("T=%v/reverse=%v", c.T, c.reverse), func(s *suite) {
			st, sv := s.up(s.randn(n*v), n, v)
			te, tv := s.up(s.randn(n*v), n, v)
			losses, ds := s.zeros32(n), s.zeros(n, v)
			p := backend.KL{Temperature: c.T, Reverse: c.reverse, Scale: 0.5}
			s.do(s.b.KLDiv(losses, ds, st, te, p))
			f := func(x []float64) []float64 {
				out := make([]float64, n)
				for i := range n {
					lp := refLogSoftmax(tv[i*v:(i+1)*v], float64(c.T))
					lq := refLogSoftmax(x[i*v:(i+1)*v], float64(c.T))
					out[i] = refKL(lp, lq, float64(c.T), c.reverse)
				}
				return out
			}
			s.close("losses", s.down(losses), f(sv), s.tol.Loss)
			half := make([]float64, n)
			for i := range half {
				half[i] = 0.5
			}
			s.close("dstudent", s.down(ds), numGrad(f, sv, half), s.tol.Backward)
			// Same distributions: zero loss and gradient.
			s.do(s.b.KLDiv(losses, ds, st, st, p))
			for i, x := range s.down(losses) {
				if math.Abs(x) > 1e-5 {
					s.t.Fatalf("KL of a distribution with itself, row %d: %v", i, x)
				}
			}
		})
	}
}

func (s *suite) klTopK() {
	const n, v, k = 3, 13, 4
	for _, c := range []struct {
		missing string
		reverse bool
	}{{backend.MissingRenormalize, false}, {backend.MissingUniform, false}, {backend.MissingUniform, true}} {
		s.run(fmt.Sprintf("%s/reverse=%v", c.missing, c.reverse), func(s *suite) {
			const T = 1.5
			st, sv := s.up(s.randn(n*v), n, v)
			// The teacher's top 4 of a real distribution.
			var ids []int32
			var logp []float64
			for range n {
				lp := refLogSoftmax(s.randn(v), T)
				order := make([]int, v)
				for j := range order {
					order[j] = j
				}
				for a := range order {
					for b := a + 1; b < v; b++ {
						if lp[order[b]] > lp[order[a]] {
							order[a], order[b] = order[b], order[a]
						}
					}
				}
				for _, j := range order[:k] {
					ids = append(ids, int32(j))
					logp = append(logp, lp[j])
				}
			}
			idt := s.upInt(ids, n, k)
			lpt, lpv := s.up(logp, n, k)
			losses, ds := s.zeros32(n), s.zeros(n, v)
			p := backend.KL{Temperature: T, Reverse: c.reverse, Scale: 1, Missing: c.missing}
			s.do(s.b.KLTopK(losses, ds, st, idt, lpt, p))
			f := func(x []float64) []float64 {
				out := make([]float64, n)
				for i := range n {
					lp := refTopKTeacher(ids[i*k:(i+1)*k], lpv[i*k:(i+1)*k], v, c.missing)
					out[i] = refKL(lp, refLogSoftmax(x[i*v:(i+1)*v], T), T, c.reverse)
				}
				return out
			}
			s.close("losses", s.down(losses), f(sv), s.tol.Loss)
			ones := []float64{1, 1, 1}
			s.close("dstudent", s.down(ds), numGrad(f, sv, ones), s.tol.Backward)
		})
	}
	s.run("errors", func(s *suite) {
		st := s.zeros(1, 5)
		if err := s.b.KLTopK(s.zeros(1), nil, st, s.upInt([]int32{7}, 1, 1), s.zeros(1, 1), backend.KL{Temperature: 1, Missing: backend.MissingRenormalize}); err == nil {
			s.t.Fatal("teacher id outside the vocabulary accepted")
		}
		if err := s.b.KLTopK(s.zeros(1), nil, st, s.upInt([]int32{1}, 1, 1), s.zeros(1, 1), backend.KL{Temperature: 1, Reverse: true, Missing: backend.MissingRenormalize}); err == nil {
			s.t.Fatal("reverse KL against a renormalized top-k accepted")
		}
	})
}
