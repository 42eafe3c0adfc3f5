package model

import (
	"fmt"
	"slices"

	"github.com/minitron/minitron/backend"
)

// Grads holds one gradient tensor per parameter, aligned with Model.Params.
type Grads struct {
	T []backend.Tensor
	// Named views, as Model has for weights.
	Embed, LMHead, NormW, NormB backend.Tensor
	Layers                      []Layer
}

// NewGrads allocates zeroed gradients in the backend's float dtype.
func (m *Model) NewGrads() (*Grads, error) { return m.NewGradsIn(m.Backend.FloatDType()) }

// NewGradsIn allocates zeroed gradients stored in dt: F32 keeps full
// precision while micro-batches accumulate into them (every op that
// accumulates a parameter gradient accepts either storage), BF16 halves
// their memory on a backend that stores bfloat16.
func (m *Model) NewGradsIn(dt backend.DType) (*Grads, error) {
	g := &Grads{T: make([]backend.Tensor, len(m.Params))}
	for i, p := range m.Params {
		t, err := m.Backend.New(dt, p.Shape...)
		if err != nil {
			return nil, fmt.Errorf("model: gradient of %s: %w", p.Name, err)
		}
		g.T[i] = t
	}
	return m.GradsOf(g.T), nil
}

// Zero clears every gradient.
func (g *Grads) Zero(b backend.Backend) error {
	for _, t := range g.T {
		if err := b.Fill(t, 0); err != nil {
			return err
		}
	}
	return nil
}

// Free releases the gradients.
func (g *Grads) Free(b backend.Backend) {
	for _, t := range g.T {
		b.Free(t)
	}
}

// LossChunk is the number of rows whose logits exist at once during the
// loss for a vocabulary of v, the most a ChunkLoss is called with: 256
// rows, or more for a small vocabulary, as many as lossChunkElems logits
// hold (in multiples of 256). A 256k vocabulary never needs more than
// 256×V floats; a 4k one computes its logits 1024 rows at a time, whose
// products run faster than four of 256.
func LossChunk(v int) int {
	return max(256, lossChunkElems/max(v, 1)/256*256)
}

// lossChunkElems bounds the logits of a chunk of rows (16 MB of float32;
// a variable so tests can make chunks of 256 rows at any vocabulary).
var lossChunkElems = 4 << 20

// backState is the workspace of a backward pass: one layer's activation
// gradients, reused across layers.
type backState struct {
	dh, dmid, dtmp, dn backend.Tensor // [N,D]
	dq, datt           backend.Tensor // [N, heads*head_dim]
	dk, dv             backend.Tensor // [N, kv*head_dim]
	dact, dup, dgate   backend.Tensor // [N,F]
	dfinal             backend.Tensor // [N,D]
	logits, losses     backend.Tensor
	tensors            []backend.Tensor
}

func (m *Model) newBackState(n int) (*backState, error) {
	c := m.Config
	d, q, kv, f := c.HiddenSize, c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim, c.IntermediateSize
	s := &backState{}
	var err error
	alloc := func(dt backend.DType, shape ...int) backend.Tensor {
		if err != nil {
			return nil
		}
		var t backend.Tensor
		if t, err = m.Backend.New(dt, shape...); t != nil {
			s.tensors = append(s.tensors, t)
		}
		return t
	}
	fd := m.Backend.FloatDType()
	s.dh, s.dmid, s.dtmp, s.dn, s.dfinal = alloc(fd, n, d), alloc(fd, n, d), alloc(fd, n, d), alloc(fd, n, d), alloc(fd, n, d)
	s.dq, s.datt = alloc(fd, n, q), alloc(fd, n, q)
	s.dk, s.dv = alloc(fd, n, kv), alloc(fd, n, kv)
	s.dact, s.dup = alloc(fd, n, f), alloc(fd, n, f)
	if c.Arch == Llama {
		s.dgate = alloc(fd, n, f)
	}
	s.logits = alloc(fd, min(n, LossChunk(c.VocabSize)), c.VocabSize)
	s.losses = alloc(backend.F32, n)
	if err != nil {
		s.free(m.Backend)
		return nil, err
	}
	return s, nil
}

func (s *backState) free(b backend.Backend) {
	for _, t := range s.tensors {
		b.Free(t)
	}
}

// NextTokenTargets returns the targets of next-token prediction for B
// sequences of T ids: row b*T+i predicts ids[b*T+i+1]; the last position of
// each sequence has no target (-1).
func NextTokenTargets(ids []int32, b, t int) []int32 {
	tg := make([]int32, len(ids))
	for s := range b {
		for i := range t {
			if i == t-1 {
				tg[s*t+i] = -1
			} else {
				tg[s*t+i] = ids[s*t+i+1]
			}
		}
	}
	return tg
}

// ChunkLoss computes the loss of the logits of rows [r0, r1) of a batch:
// it writes each row's loss into losses [r1-r0] and replaces logits
// [r1-r0, V] with d(loss)/d(logits), already multiplied by the caller's
// scale. It must not keep the tensors.
type ChunkLoss func(r0, r1 int, logits, losses backend.Tensor, scale float32) error

// CrossEntropyLoss is next-token cross-entropy against targets (a negative
// target ignores its row).
func CrossEntropyLoss(b backend.Backend, targets []int32) (ChunkLoss, func(), error) {
	tg, err := b.FromInt32(append([]int32(nil), targets...), len(targets))
	if err != nil {
		return nil, nil, err
	}
	f := func(r0, r1 int, logits, losses backend.Tensor, scale float32) error {
		tv, err := b.View(tg, r0, r1-r0)
		if err != nil {
			return err
		}
		return b.CrossEntropy(losses, logits, logits, tv, scale)
	}
	return f, func() { b.Free(tg) }, nil
}

// countTargets checks n next-token targets against the vocabulary and
// returns how many rows have one (a negative target means none).
func (m *Model) countTargets(targets []int32, n int) (int, error) {
	if len(targets) != n {
		return 0, fmt.Errorf("model: %d targets for %d rows", len(targets), n)
	}
	count := 0
	for i, t := range targets {
		if int(t) >= m.Config.VocabSize {
			return 0, fmt.Errorf("model: target %d at row %d is outside the vocabulary (size %d)", t, i, m.Config.VocabSize)
		}
		if t >= 0 {
			count++
		}
	}
	if count == 0 {
		return 0, fmt.Errorf("model: no row has a target")
	}
	return count, nil
}

// LossAndGrad runs a forward pass that keeps activations (a must be made
// with keep), computes the mean cross-entropy of the rows whose target is
// not negative, and accumulates scale × d(loss)/d(parameter) into g.
// It returns the loss (before scale).
func (m *Model) LossAndGrad(a *Activations, in Input, targets []int32, scale float32, g *Grads) (float64, error) {
	n := in.B * in.T
	count, err := m.countTargets(targets, n)
	if err != nil {
		return 0, err
	}
	ce, free, err := CrossEntropyLoss(m.Backend, targets)
	if err != nil {
		return 0, err
	}
	defer free()
	loss, err := m.LossAndGradWith(a, in, ce, scale/float32(count), g)
	return loss / float64(count), err
}

// LossAndGradWith runs a forward pass keeping activations, applies loss to
// the logits a chunk of rows at a time (so the full logits never exist),
// back-propagates scale × its gradient into g, and returns the summed loss.
func (m *Model) LossAndGradWith(a *Activations, in Input, loss ChunkLoss, scale float32, g *Grads) (float64, error) {
	return m.LossAndGradHidden(a, in, loss, nil, scale, g)
}

// HiddenLoss adds losses on hidden states to a backward pass (the
// intermediate-state distillation loss). Hidden state l is the residual
// stream after l layers: 0 is the embedding output, L the last layer's
// output (before the final norm). Layers lists states taken as they are;
// during the backward pass, when dh holds the gradient of everything above
// state l, Grad is called with its forward value h = Activations.H[l]
// [N, D] and adds scale × d(its loss)/dh into dh. Norms lists states taken
// after LayerNorm (the norm at the input of layer l, the final norm for
// L; Activations.NormOut): NormGrad adds scale × d(its loss)/dn into dn,
// the gradient of that norm's output, before the norm's backward pass.
// logitLoss is the summed loss of the logits (from the ChunkLoss).
type HiddenLoss struct {
	Layers   []int
	Grad     func(l int, h, dh backend.Tensor, scale float32, logitLoss float64) error
	Norms    []int
	NormGrad func(l int, n, dn backend.Tensor, scale float32, logitLoss float64) error
}

func (h *HiddenLoss) wants(l int) bool {
	return h != nil && slices.Contains(h.Layers, l)
}

func (h *HiddenLoss) wantsNorm(l int) bool {
	return h != nil && slices.Contains(h.Norms, l)
}

// NormOut is the LayerNorm output of hidden state l of the last forward
// pass made with keep: layer l's input norm for l < L, the final norm for
// l == L.
func (a *Activations) NormOut(l int) backend.Tensor {
	if l == len(a.H)-1 {
		return a.final
	}
	return a.layer(l).n1
}

// LossAndGradHidden is LossAndGradWith plus losses on hidden states.
func (m *Model) LossAndGradHidden(a *Activations, in Input, loss ChunkLoss, hidden *HiddenLoss, scale float32, g *Grads) (float64, error) {
	if hidden != nil {
		for _, l := range append(append([]int(nil), hidden.Layers...), hidden.Norms...) {
			if l < 0 || l > m.Config.NumLayers {
				return 0, fmt.Errorf("model: hidden-state loss on hidden state %d; the model has states 0 (the embedding output) to %d", l, m.Config.NumLayers)
			}
		}
	}
	if !a.Keep {
		return 0, fmt.Errorf("model: LossAndGrad needs activations made with keep")
	}
	if in.LogitRows != nil || in.Past != nil {
		return 0, fmt.Errorf("model: LossAndGrad takes full sequences without a cache")
	}
	n := in.B * in.T
	if err := m.trunk(a, in, Options{}); err != nil {
		return 0, err
	}
	if err := m.finalNorm(a, a.H[m.Config.NumLayers], n, nil); err != nil {
		return 0, err
	}
	if a.back == nil || a.back.rows != n {
		if a.back != nil {
			a.back.s.free(m.Backend)
		}
		s, err := m.newBackState(n)
		if err != nil {
			return 0, err
		}
		a.back = &backLink{s: s, rows: n}
	}
	s := a.back.s
	total, err := m.lossBackward(a, s, loss, scale, g)
	if err != nil {
		return 0, err
	}
	if err := m.trunkBackward(a, s, in, g, hidden, scale, total); err != nil {
		return 0, err
	}
	return total, nil
}

// backLink keeps a backward workspace with the activations it serves.
type backLink struct {
	s    *backState
	rows int
}

// Final returns the final-norm output [rows, D] of the last forward pass
// made by LossAndGradWith, Loss or Hidden (valid until the next pass).
func (a *Activations) Final() backend.Tensor { return a.final }

// lossBackward computes the summed loss and, chunk by chunk over rows, the
// gradients of the final-norm output (s.dfinal) and of lm_head.
func (m *Model) lossBackward(a *Activations, s *backState, loss ChunkLoss, scale float32, g *Grads) (float64, error) {
	b, c := m.Backend, m.Config
	n, d, v := a.N, c.HiddenSize, c.VocabSize
	chunk := LossChunk(v)
	for r0 := 0; r0 < n; r0 += chunk {
		r1 := min(n, r0+chunk)
		rows := r1 - r0
		fin, err := b.View(a.final, r0*d, rows, d)
		if err != nil {
			return 0, err
		}
		dfin, err := b.View(s.dfinal, r0*d, rows, d)
		if err != nil {
			return 0, err
		}
		lg, err := b.View(s.logits, 0, rows, v)
		if err != nil {
			return 0, err
		}
		ls, err := b.View(s.losses, r0, rows)
		if err != nil {
			return 0, err
		}
		if err := b.MatMul(lg, fin, m.LMHead, false, true, 1, 0); err != nil {
			return 0, err
		}
		if err := loss(r0, r1, lg, ls, scale); err != nil {
			return 0, err
		}
		if err := b.MatMul(dfin, lg, m.LMHead, false, false, 1, 0); err != nil {
			return 0, err
		}
		if err := b.MatMul(g.LMHead, lg, fin, true, false, 1, 1); err != nil {
			return 0, err
		}
	}
	lv, err := b.ToFloat32(s.losses)
	if err != nil {
		return 0, err
	}
	var total float64
	for _, x := range lv {
		total += float64(x)
	}
	return total, nil
}

// Hidden runs the model up to the final norm (no logits, no backward) and
// returns the final-norm output [B*T, D], which belongs to a.
func (m *Model) Hidden(a *Activations, in Input, opt Options) (backend.Tensor, error) {
	if err := m.trunk(a, in, opt); err != nil {
		return nil, err
	}
	if err := m.finalNorm(a, a.H[m.Config.NumLayers], in.B*in.T, opt.Observer); err != nil {
		return nil, err
	}
	return a.final, nil
}

// normBackward is the architecture's normalization backward.
func (m *Model) normBackward(dx, dw, db, dout, x, w, stats backend.Tensor) error {
	if m.Config.Arch == Nemotron {
		return m.Backend.LayerNormBackward(dx, dw, db, dout, x, w, stats, 1)
	}
	return m.Backend.RMSNormBackward(dx, dw, dout, x, w, stats)
}

// trunkBackward propagates s.dfinal back through the final norm, the
// layers and the embedding, accumulating parameter gradients.
func (m *Model) trunkBackward(a *Activations, s *backState, in Input, g *Grads, hidden *HiddenLoss, scale float32, logitLoss float64) error {
	b, c := m.Backend, m.Config
	L := c.NumLayers
	addNorm := func(l int, n, dn backend.Tensor) error {
		if !hidden.wantsNorm(l) {
			return nil
		}
		if err := hidden.NormGrad(l, n, dn, scale, logitLoss); err != nil {
			return fmt.Errorf("model: hidden-state loss after the norm of state %d: %w", l, err)
		}
		return nil
	}
	if err := addNorm(L, a.final, s.dfinal); err != nil {
		return err
	}
	if err := m.normBackward(s.dh, g.NormW, g.NormB, s.dfinal, a.H[L], m.NormW, a.fstat); err != nil {
		return fmt.Errorf("model: final norm backward: %w", err)
	}
	addHidden := func(l int) error {
		if !hidden.wants(l) {
			return nil
		}
		if err := hidden.Grad(l, a.H[l], s.dh, scale, logitLoss); err != nil {
			return fmt.Errorf("model: hidden-state loss after layer %d: %w", l, err)
		}
		return nil
	}
	if err := addHidden(L); err != nil {
		return err
	}
	at := m.attn(in, nil)
	for l := L - 1; l >= 0; l-- {
		if err := m.layerBackward(l, a, s, g, at, addNorm); err != nil {
			return fmt.Errorf("model: layer %d backward: %w", l, err)
		}
		if err := addHidden(l); err != nil {
			return err
		}
	}
	return b.EmbeddingBackward(g.Embed, s.dh, a.ids)
}

// layerBackward takes s.dh = dL/d(layer output) and leaves dL/d(layer input) in s.dh;
// addNorm adds hidden-state losses on the output of the layer's input norm.
func (m *Model) layerBackward(l int, a *Activations, s *backState, g *Grads, at backend.Attn, addNorm func(l int, n, dn backend.Tensor) error) error {
	b, W, G, la := m.Backend, &m.Layers[l], &g.Layers[l], a.layer(l)
	x, mid := a.H[l], a.Mid[l]
	mm := func(c, x, y backend.Tensor, ta, tb bool, beta float32) error {
		return b.MatMul(c, x, y, ta, tb, 1, beta)
	}
	// MLP: out = mid + act·Wdownᵀ
	if err := mm(s.dact, s.dh, W.Down, false, false, 0); err != nil {
		return err
	}
	if err := mm(G.Down, s.dh, la.act, true, false, 1); err != nil {
		return err
	}
	if m.Config.Arch == Nemotron {
		if err := b.ReLU2Backward(s.dup, s.dact, la.up); err != nil {
			return err
		}
	} else if err := b.SwiGLUBackward(s.dgate, s.dup, s.dact, la.gate, la.up); err != nil {
		return err
	}
	if err := mm(G.Up, s.dup, la.n2, true, false, 1); err != nil {
		return err
	}
	if err := mm(s.dn, s.dup, W.Up, false, false, 0); err != nil {
		return err
	}
	if m.Config.Arch == Llama {
		if err := mm(G.Gate, s.dgate, la.n2, true, false, 1); err != nil {
			return err
		}
		if err := mm(s.dn, s.dgate, W.Gate, false, false, 1); err != nil {
			return err
		}
	}
	if err := m.normBackward(s.dtmp, G.PostNormW, G.PostNormB, s.dn, mid, W.PostNormW, la.s2); err != nil {
		return err
	}
	if err := b.Add(s.dmid, s.dh, s.dtmp); err != nil {
		return err
	}
	// Attention: mid = x + att·Woᵀ
	if err := mm(s.datt, s.dmid, W.O, false, false, 0); err != nil {
		return err
	}
	if err := mm(G.O, s.dmid, la.att, true, false, 1); err != nil {
		return err
	}
	if err := b.AttentionBackward(s.dq, s.dk, s.dv, s.datt, la.att, la.lse, la.q, la.k, la.v, at); err != nil {
		return err
	}
	if err := b.RoPE(s.dq, a.pos, m.rope, true); err != nil {
		return err
	}
	if err := b.RoPE(s.dk, a.pos, m.rope, true); err != nil {
		return err
	}
	for i, p := range []struct{ d, w, gw backend.Tensor }{{s.dq, W.Q, G.Q}, {s.dk, W.K, G.K}, {s.dv, W.V, G.V}} {
		if err := mm(p.gw, p.d, la.n1, true, false, 1); err != nil {
			return err
		}
		beta := float32(1)
		if i == 0 {
			beta = 0
		}
		if err := mm(s.dn, p.d, p.w, false, false, beta); err != nil {
			return err
		}
	}
	if err := addNorm(l, la.n1, s.dn); err != nil {
		return err
	}
	if err := m.normBackward(s.dtmp, G.InNormW, G.InNormB, s.dn, x, W.InNormW, la.s1); err != nil {
		return err
	}
	return b.Add(s.dh, s.dmid, s.dtmp)
}

// Loss returns the mean cross-entropy of the rows whose target is not
// negative, without gradients; logits are made LossChunk rows at a time.
// a may be made with or without keep. opt may skip layers or observe.
func (m *Model) Loss(a *Activations, in Input, targets []int32, opt Options) (float64, error) {
	n := in.B * in.T
	count, err := m.countTargets(targets, n)
	if err != nil {
		return 0, err
	}
	if err := m.trunk(a, in, opt); err != nil {
		return 0, err
	}
	if err := m.finalNorm(a, a.H[m.Config.NumLayers], n, opt.Observer); err != nil {
		return 0, err
	}
	b, c := m.Backend, m.Config
	chunk := LossChunk(c.VocabSize)
	rows := min(n, chunk)
	if err := m.ensure(&a.logits, a, b.FloatDType(), rows, c.VocabSize); err != nil {
		return 0, err
	}
	losses, err := b.New(backend.F32, n)
	if err != nil {
		return 0, err
	}
	defer b.Free(losses)
	tg, err := b.FromInt32(append([]int32(nil), targets...), n)
	if err != nil {
		return 0, err
	}
	defer b.Free(tg)
	for r0 := 0; r0 < n; r0 += chunk {
		r1 := min(n, r0+chunk)
		fin, err := b.View(a.final, r0*c.HiddenSize, r1-r0, c.HiddenSize)
		if err != nil {
			return 0, err
		}
		lg, err := b.View(a.logits, 0, r1-r0, c.VocabSize)
		if err != nil {
			return 0, err
		}
		ls, err := b.View(losses, r0, r1-r0)
		if err != nil {
			return 0, err
		}
		tv, err := b.View(tg, r0, r1-r0)
		if err != nil {
			return 0, err
		}
		if err := b.MatMul(lg, fin, m.LMHead, false, true, 1, 0); err != nil {
			return 0, err
		}
		if err := b.CrossEntropy(ls, nil, lg, tv, 1); err != nil {
			return 0, err
		}
	}
	lv, err := b.ToFloat32(losses)
	if err != nil {
		return 0, err
	}
	var total float64
	for _, x := range lv {
		total += float64(x)
	}
	return total / float64(count), nil
}

// LogitsChunked computes the logits of final [N, D] (a final-norm output)
// a chunk of rows at a time and hands each chunk to loss with scale 0 (no
// gradient is wanted). It returns the sum of the losses.
func (m *Model) LogitsChunked(final backend.Tensor, loss ChunkLoss) (float64, error) {
	b, c := m.Backend, m.Config
	n, d, v := backend.Rows(final), c.HiddenSize, c.VocabSize
	chunk := LossChunk(v)
	lg, err := b.New(b.FloatDType(), min(n, chunk), v)
	if err != nil {
		return 0, err
	}
	defer b.Free(lg)
	losses, err := b.New(backend.F32, n)
	if err != nil {
		return 0, err
	}
	defer b.Free(losses)
	for r0 := 0; r0 < n; r0 += chunk {
		r1 := min(n, r0+chunk)
		fin, err := b.View(final, r0*d, r1-r0, d)
		if err != nil {
			return 0, err
		}
		l, err := b.View(lg, 0, r1-r0, v)
		if err != nil {
			return 0, err
		}
		ls, err := b.View(losses, r0, r1-r0)
		if err != nil {
			return 0, err
		}
		if err := b.MatMul(l, fin, m.LMHead, false, true, 1, 0); err != nil {
			return 0, err
		}
		if err := loss(r0, r1, l, ls, 0); err != nil {
			return 0, err
		}
	}
	lv, err := b.ToFloat32(losses)
	if err != nil {
		return 0, err
	}
	var total float64
	for _, x := range lv {
		total += float64(x)
	}
	return total, nil
}
