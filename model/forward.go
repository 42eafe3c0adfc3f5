package model

import (
	"fmt"
	"math"

	"github.com/minitron/minitron/backend"
)

// Site names a point in the network where an Observer sees activations.
type Site uint8

// Observation sites.
const (
	SiteEmbed     Site = iota + 1 // embedding output [N,D]
	SiteLayerIn                   // input of a layer (residual stream) [N,D]
	SiteNorm1                     // input_layernorm output [N,D]
	SiteAttnOut                   // attention output = o_proj input [N, heads*head_dim]
	SiteNorm2                     // post_attention_layernorm output [N,D]
	SiteMLPPre                    // up_proj output, before the activation [N,F]
	SiteMLPAct                    // down_proj input, after the activation [N,F]
	SiteLayerOut                  // output of a layer [N,D]
	SiteFinalNorm                 // final norm output [N or selected rows, D]
)

// Observer is called during a forward pass with activations at each site
// (layer is -1 for model-wide sites). It must not keep t after returning.
type Observer func(site Site, layer int, t backend.Tensor) error

// Input is the token batch of one forward call: B sequences of T tokens.
type Input struct {
	B, T int
	IDs  []int32 // B*T token ids, row-major
	// Past is used with a cache: sequence b's tokens sit at positions
	// Past[b], Past[b]+1, ... and attend to the Past[b] cached positions.
	Past []int
	// LogitRows selects the rows whose logits are computed; nil means all.
	LogitRows []int32
	// Slots, with a cache, is the cache slot of each sequence (distinct);
	// nil means sequence b uses slot b.
	Slots []int
}

func (in Input) slot(b int) int {
	if in.Slots == nil {
		return b
	}
	return in.Slots[b]
}

// Options modify a forward call.
type Options struct {
	Cache    *Cache
	Observer Observer
	// Skip[l] removes layer l (its input passes through unchanged).
	Skip []bool
	// From > 0 starts the pass at layer From, with FromHidden [N, D] as
	// the residual stream entering it: the embedding and the layers before
	// From are not run (FromHidden is what they gave, kept from an earlier
	// pass over the same ids). Not with a cache.
	From       int
	FromHidden backend.Tensor
}

// Cache holds keys and values of up to Slots sequences of MaxT positions.
// Sequence b of a cached forward call uses slot Input.Slots[b] (or b).
type Cache struct {
	Slots, MaxT int
	K, V        []backend.Tensor // per layer [Slots*MaxT, KVHeads*HeadDim]
}

// NewCache allocates a KV cache.
func (m *Model) NewCache(slots, maxT int) (*Cache, error) {
	c := &Cache{Slots: slots, MaxT: maxT}
	w := m.Config.NumKVHeads * m.Config.HeadDim
	for range m.Config.NumLayers {
		k, err := m.Backend.New(m.Backend.FloatDType(), slots*maxT, w)
		if err != nil {
			return nil, err
		}
		v, err := m.Backend.New(m.Backend.FloatDType(), slots*maxT, w)
		if err != nil {
			return nil, err
		}
		c.K, c.V = append(c.K, k), append(c.V, v)
	}
	return c, nil
}

// Free releases the cache.
func (c *Cache) Free(b backend.Backend) {
	for i := range c.K {
		b.Free(c.K[i])
		b.Free(c.V[i])
	}
}

// layerActs are one layer's activations. With Keep, each layer has its own;
// otherwise all layers share one set.
type layerActs struct {
	n1, s1   backend.Tensor // input norm output, stats
	q, k, v  backend.Tensor // projections after RoPE
	att, lse backend.Tensor // attention output, log-sum-exp
	n2, s2   backend.Tensor // post-attention norm output, stats
	up, gate backend.Tensor // MLP projections (gate: Llama only)
	act      backend.Tensor // down_proj input
}

// Activations is the workspace of forward (and backward) passes over N rows.
type Activations struct {
	N    int
	Keep bool // every layer's activations are kept for a backward pass
	// H[l] is the residual stream entering layer l and H[L] the last layer's
	// output; Mid[l] is the stream after layer l's attention. Without Keep
	// they are all one tensor updated in place.
	H, Mid       []backend.Tensor
	layers       []layerActs
	ids, pos     backend.Tensor
	sel          backend.Tensor // gathered rows for LogitRows
	final, fstat backend.Tensor
	logits       backend.Tensor
	logitRows    int
	tensors      []backend.Tensor // everything allocated, for Free
	back         *backLink        // backward workspace, made on first use
}

// NewActivations allocates a workspace for n rows; keep retains every
// layer's activations for a backward pass.
func (m *Model) NewActivations(n int, keep bool) (*Activations, error) {
	c := m.Config
	a := &Activations{N: n, Keep: keep}
	var err error
	alloc := func(dt backend.DType, shape ...int) backend.Tensor {
		if err != nil {
			return nil
		}
		var t backend.Tensor
		t, err = m.Backend.New(dt, shape...)
		if t != nil {
			a.tensors = append(a.tensors, t)
		}
		return t
	}
	d, q, kv, f := c.HiddenSize, c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim, c.IntermediateSize
	nemo := c.Arch == Nemotron
	fd := m.Backend.FloatDType() // statistics and log-sum-exp stay float32
	sets := 1
	if keep {
		sets = c.NumLayers
	}
	for range sets {
		la := layerActs{
			n1: alloc(fd, n, d), q: alloc(fd, n, q), k: alloc(fd, n, kv), v: alloc(fd, n, kv),
			att: alloc(fd, n, q), lse: alloc(backend.F32, n, c.NumHeads), n2: alloc(fd, n, d),
			up: alloc(fd, n, f),
		}
		if nemo {
			la.s1, la.s2 = alloc(backend.F32, n, 2), alloc(backend.F32, n, 2)
		} else {
			la.s1, la.s2 = alloc(backend.F32, n), alloc(backend.F32, n)
			la.gate = alloc(fd, n, f)
		}
		switch {
		case keep:
			la.act = alloc(fd, n, f)
		case nemo:
			la.act = la.up // relu² in place
		default:
			la.act = la.gate // SwiGLU in place
		}
		a.layers = append(a.layers, la)
	}
	if keep {
		for range c.NumLayers + 1 {
			a.H = append(a.H, alloc(fd, n, d))
		}
		for range c.NumLayers {
			a.Mid = append(a.Mid, alloc(fd, n, d))
		}
	} else {
		x := alloc(fd, n, d)
		for range c.NumLayers + 1 {
			a.H = append(a.H, x)
		}
		for range c.NumLayers {
			a.Mid = append(a.Mid, x)
		}
	}
	a.ids = alloc(backend.I32, n)
	a.pos = alloc(backend.I32, n)
	if nemo {
		a.fstat = alloc(backend.F32, n, 2)
	} else {
		a.fstat = alloc(backend.F32, n)
	}
	if err != nil {
		a.Free(m.Backend)
		return nil, fmt.Errorf("model: allocating activations for %d rows: %w", n, err)
	}
	return a, nil
}

// Free releases the workspace.
func (a *Activations) Free(b backend.Backend) {
	for _, t := range a.tensors {
		b.Free(t)
	}
	a.tensors = nil
	if a.back != nil {
		a.back.s.free(b)
		a.back = nil
	}
}

func (a *Activations) layer(l int) *layerActs {
	if a.Keep {
		return &a.layers[l]
	}
	return &a.layers[0]
}

// ensure (re)allocates a tensor if its shape differs.
func (m *Model) ensure(t *backend.Tensor, a *Activations, dt backend.DType, shape ...int) error {
	if *t != nil && equalShape((*t).Shape(), shape) {
		return nil
	}
	if *t != nil {
		m.Backend.Free(*t)
	}
	nt, err := m.Backend.New(dt, shape...)
	if err != nil {
		return err
	}
	*t = nt
	a.tensors = append(a.tensors, nt)
	return nil
}

func equalShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// norm applies the architecture's normalization.
func (m *Model) norm(out, stats, x, w, bias backend.Tensor) error {
	eps := float32(m.Config.NormEps)
	if m.Config.Arch == Nemotron {
		return m.Backend.LayerNorm(out, stats, x, w, bias, eps, 1)
	}
	return m.Backend.RMSNorm(out, stats, x, w, eps)
}

// attn describes attention for an input, with or without a cache.
func (m *Model) attn(in Input, cache *Cache) backend.Attn {
	c := m.Config
	a := backend.Attn{B: in.B, T: in.T, Heads: c.NumHeads, KVHeads: c.NumKVHeads, HeadDim: c.HeadDim,
		KVRows: in.T, Scale: float32(1 / math.Sqrt(float64(c.HeadDim)))}
	if cache != nil {
		a.KVRows = cache.MaxT
		a.Past = in.Past
		a.Slots = in.Slots
	}
	return a
}

func (m *Model) checkInput(a *Activations, in Input, opt Options) error {
	n := in.B * in.T
	if n != a.N || len(in.IDs) != n {
		return fmt.Errorf("model: %d ids for %d×%d tokens in a workspace of %d rows", len(in.IDs), in.B, in.T, a.N)
	}
	for i, id := range in.IDs {
		if id < 0 || int(id) >= m.Config.VocabSize {
			return fmt.Errorf("model: token id %d at position %d is outside the vocabulary (size %d)", id, i, m.Config.VocabSize)
		}
	}
	if c := opt.Cache; c != nil {
		if in.B > c.Slots || len(in.Past) != in.B {
			return fmt.Errorf("model: cached forward of %d sequences with %d past lengths on a cache of %d slots", in.B, len(in.Past), c.Slots)
		}
		if in.Slots != nil {
			if len(in.Slots) != in.B {
				return fmt.Errorf("model: %d slots for %d sequences", len(in.Slots), in.B)
			}
			seen := map[int]bool{}
			for _, sl := range in.Slots {
				if sl < 0 || sl >= c.Slots || seen[sl] {
					return fmt.Errorf("model: cache slot %d is out of range or used twice (cache of %d slots)", sl, c.Slots)
				}
				seen[sl] = true
			}
		}
		for b, p := range in.Past {
			if p < 0 || p+in.T > c.MaxT {
				return fmt.Errorf("model: sequence %d: %d cached + %d new positions exceed the cache's %d", b, p, in.T, c.MaxT)
			}
		}
	} else if in.Past != nil || in.Slots != nil {
		return fmt.Errorf("model: Past or Slots given without a cache")
	}
	if opt.Skip != nil && len(opt.Skip) != m.Config.NumLayers {
		return fmt.Errorf("model: %d skip flags for %d layers", len(opt.Skip), m.Config.NumLayers)
	}
	if opt.From != 0 {
		if opt.From < 0 || opt.From > m.Config.NumLayers {
			return fmt.Errorf("model: a pass from layer %d of a model of %d layers", opt.From, m.Config.NumLayers)
		}
		if opt.Cache != nil {
			return fmt.Errorf("model: a pass from layer %d cannot use a cache", opt.From)
		}
		if opt.FromHidden == nil || backend.Rows(opt.FromHidden) != n || backend.Cols(opt.FromHidden) != m.Config.HiddenSize {
			return fmt.Errorf("model: a pass from layer %d needs its input stream of %d×%d", opt.From, n, m.Config.HiddenSize)
		}
	}
	for _, r := range in.LogitRows {
		if r < 0 || int(r) >= n {
			return fmt.Errorf("model: logit row %d outside [0,%d)", r, n)
		}
	}
	return nil
}

// Forward runs the model on in and returns the logits [rows, vocab] (rows:
// len(in.LogitRows), or all B*T). The returned tensor belongs to a and is
// overwritten by the next call.
func (m *Model) Forward(a *Activations, in Input, opt Options) (backend.Tensor, error) {
	if err := m.checkInput(a, in, opt); err != nil {
		return nil, err
	}
	if err := m.trunk(a, in, opt); err != nil {
		return nil, err
	}
	b, c := m.Backend, m.Config
	last := a.H[c.NumLayers]
	rows := in.B * in.T
	if in.LogitRows != nil {
		rows = len(in.LogitRows)
		if err := m.ensure(&a.sel, a, m.Backend.FloatDType(), rows, c.HiddenSize); err != nil {
			return nil, err
		}
		sel, err := b.FromInt32(append([]int32(nil), in.LogitRows...), rows)
		if err != nil {
			return nil, err
		}
		err = b.GatherRows(a.sel, last, sel)
		b.Free(sel)
		if err != nil {
			return nil, err
		}
		last = a.sel
	}
	if err := m.finalNorm(a, last, rows, opt.Observer); err != nil {
		return nil, err
	}
	if err := m.ensure(&a.logits, a, m.Backend.FloatDType(), rows, c.VocabSize); err != nil {
		return nil, err
	}
	if err := b.MatMul(a.logits, a.final, m.LMHead, false, true, 1, 0); err != nil {
		return nil, err
	}
	a.logitRows = rows
	return a.logits, nil
}

// finalNorm normalizes x ([rows, D]) into a.final; stats are kept when the
// rows are the whole batch (for a backward pass).
func (m *Model) finalNorm(a *Activations, x backend.Tensor, rows int, obs Observer) error {
	if err := m.ensure(&a.final, a, m.Backend.FloatDType(), rows, m.Config.HiddenSize); err != nil {
		return err
	}
	stat := a.fstat
	if rows != a.N {
		stat = nil
	}
	if err := m.norm(a.final, stat, x, m.NormW, m.NormB); err != nil {
		return err
	}
	if obs != nil {
		return obs(SiteFinalNorm, -1, a.final)
	}
	return nil
}

// trunk runs the embedding and the layers, leaving the last layer's output
// in a.H[L].
func (m *Model) trunk(a *Activations, in Input, opt Options) error {
	if err := m.checkInput(a, in, opt); err != nil {
		return err
	}
	b, c := m.Backend, m.Config
	n := in.B * in.T
	ids := make([]int32, n)
	copy(ids, in.IDs)
	pos := make([]int32, n)
	for s := range in.B {
		p0 := 0
		if in.Past != nil {
			p0 = in.Past[s]
		}
		for i := range in.T {
			pos[s*in.T+i] = int32(p0 + i)
		}
	}
	for _, x := range []struct {
		dst backend.Tensor
		v   []int32
	}{{a.ids, ids}, {a.pos, pos}} {
		t, err := b.FromInt32(x.v, n)
		if err != nil {
			return err
		}
		err = b.Copy(x.dst, t)
		b.Free(t)
		if err != nil {
			return err
		}
	}
	obs := opt.Observer
	if obs == nil {
		obs = func(Site, int, backend.Tensor) error { return nil }
	}
	if opt.From > 0 {
		if err := b.Copy(a.H[opt.From], opt.FromHidden); err != nil {
			return err
		}
	} else {
		if err := b.Embedding(a.H[0], m.Embed, a.ids); err != nil {
			return err
		}
		if err := obs(SiteEmbed, -1, a.H[0]); err != nil {
			return err
		}
	}
	var cacheRows backend.Tensor
	if opt.Cache != nil {
		rows := make([]int32, n)
		for s := range in.B {
			for i := range in.T {
				rows[s*in.T+i] = int32(in.slot(s)*opt.Cache.MaxT + in.Past[s] + i)
			}
		}
		var err error
		if cacheRows, err = b.FromInt32(rows, n); err != nil {
			return err
		}
		defer b.Free(cacheRows)
	}
	at := m.attn(in, opt.Cache)
	for l := opt.From; l < c.NumLayers; l++ {
		x, mid, out := a.H[l], a.Mid[l], a.H[l+1]
		if opt.Skip != nil && opt.Skip[l] {
			if out != x {
				if err := b.Copy(out, x); err != nil {
					return err
				}
			}
			continue
		}
		if err := obs(SiteLayerIn, l, x); err != nil {
			return err
		}
		if err := m.layerForward(l, a, at, x, mid, out, opt.Cache, cacheRows, obs); err != nil {
			return fmt.Errorf("model: layer %d: %w", l, err)
		}
		if err := obs(SiteLayerOut, l, out); err != nil {
			return err
		}
	}
	return nil
}

// layerForward runs block l: x → mid = x + attn(norm1(x)) → out = mid + mlp(norm2(mid)).
// x, mid and out may be the same tensor (inference updates the stream in place).
func (m *Model) layerForward(l int, a *Activations, at backend.Attn, x, mid, out backend.Tensor, cache *Cache, cacheRows backend.Tensor, obs Observer) error {
	b, L, la := m.Backend, &m.Layers[l], a.layer(l)
	if err := m.norm(la.n1, la.s1, x, L.InNormW, L.InNormB); err != nil {
		return err
	}
	if err := obs(SiteNorm1, l, la.n1); err != nil {
		return err
	}
	for _, p := range []struct{ out, w backend.Tensor }{{la.q, L.Q}, {la.k, L.K}, {la.v, L.V}} {
		if err := b.MatMul(p.out, la.n1, p.w, false, true, 1, 0); err != nil {
			return err
		}
	}
	if err := b.RoPE(la.q, a.pos, m.rope, false); err != nil {
		return err
	}
	if err := b.RoPE(la.k, a.pos, m.rope, false); err != nil {
		return err
	}
	k, v := la.k, la.v
	if cache != nil {
		if err := b.ScatterRows(cache.K[l], la.k, cacheRows); err != nil {
			return err
		}
		if err := b.ScatterRows(cache.V[l], la.v, cacheRows); err != nil {
			return err
		}
		if at.Slots != nil {
			k, v = cache.K[l], cache.V[l]
		} else {
			w := m.Config.NumKVHeads * m.Config.HeadDim
			var err error
			if k, err = b.View(cache.K[l], 0, at.B*cache.MaxT, w); err != nil {
				return err
			}
			if v, err = b.View(cache.V[l], 0, at.B*cache.MaxT, w); err != nil {
				return err
			}
		}
	}
	lse := la.lse // the log-sum-exps serve only a backward pass
	if !a.Keep {
		lse = nil
	}
	if err := b.Attention(la.att, lse, la.q, k, v, at); err != nil {
		return err
	}
	if err := obs(SiteAttnOut, l, la.att); err != nil {
		return err
	}
	if mid != x {
		if err := b.Copy(mid, x); err != nil {
			return err
		}
	}
	if err := b.MatMul(mid, la.att, L.O, false, true, 1, 1); err != nil {
		return err
	}
	if err := m.norm(la.n2, la.s2, mid, L.PostNormW, L.PostNormB); err != nil {
		return err
	}
	if err := obs(SiteNorm2, l, la.n2); err != nil {
		return err
	}
	if err := b.MatMul(la.up, la.n2, L.Up, false, true, 1, 0); err != nil {
		return err
	}
	if err := obs(SiteMLPPre, l, la.up); err != nil {
		return err
	}
	if m.Config.Arch == Nemotron {
		if err := b.ReLU2(la.act, la.up); err != nil {
			return err
		}
	} else {
		if err := b.MatMul(la.gate, la.n2, L.Gate, false, true, 1, 0); err != nil {
			return err
		}
		if err := b.SwiGLU(la.act, la.gate, la.up); err != nil {
			return err
		}
	}
	if err := obs(SiteMLPAct, l, la.act); err != nil {
		return err
	}
	if out != mid {
		if err := b.Copy(out, mid); err != nil {
			return err
		}
	}
	return b.MatMul(out, la.act, L.Down, false, true, 1, 1)
}
