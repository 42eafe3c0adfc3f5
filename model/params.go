package model

import "fmt"

// Axis says what a dimension of a parameter indexes; pruning slices each
// axis by the kept indices of its kind.
type Axis uint8

// Axes of parameter dimensions.
const (
	AxisVocab  Axis = iota + 1
	AxisHidden      // embedding channels
	AxisQ           // query heads × head_dim
	AxisKV          // KV heads × head_dim
	AxisFFN         // MLP neurons
)

func (a Axis) String() string {
	return [...]string{"?", "vocab", "hidden", "q", "kv", "ffn"}[a]
}

// Role is what a parameter does in the network.
type Role uint8

// Parameter roles.
const (
	Embed Role = iota + 1
	InputNormWeight
	InputNormBias
	QProj
	KProj
	VProj
	OProj
	PostNormWeight
	PostNormBias
	GateProj
	UpProj
	DownProj
	FinalNormWeight
	FinalNormBias
	LMHead
)

// IsNorm reports whether the role is a normalization weight or bias.
func (r Role) IsNorm() bool {
	switch r {
	case InputNormWeight, InputNormBias, PostNormWeight, PostNormBias, FinalNormWeight, FinalNormBias:
		return true
	}
	return false
}

// Param is one entry of the parameter table.
type Param struct {
	Name  string // Hugging Face tensor name
	Role  Role
	Layer int // -1 for model-wide parameters
	Shape []int
	Axes  []Axis // what each dimension indexes
}

// Numel is the number of elements.
func (p Param) Numel() int {
	n := 1
	for _, d := range p.Shape {
		n *= d
	}
	return n
}

// Params returns the ordered parameter table: embeddings, then each layer
// (input norm, q, k, v, o, post-attention norm, gate, up, down), then the
// final norm and lm_head. It is the single source of parameter names,
// shapes and order. A tied lm_head is not listed: it is the embedding.
func (c *Config) Params() []Param {
	d, q, kv, f, v := c.HiddenSize, c.NumHeads*c.HeadDim, c.NumKVHeads*c.HeadDim, c.IntermediateSize, c.VocabSize
	nemo := c.Arch == Nemotron
	ps := []Param{{Name: "model.embed_tokens.weight", Role: Embed, Layer: -1, Shape: []int{v, d}, Axes: []Axis{AxisVocab, AxisHidden}}}
	for l := range c.NumLayers {
		pre := fmt.Sprintf("model.layers.%d.", l)
		add := func(name string, r Role, shape []int, axes ...Axis) {
			ps = append(ps, Param{Name: pre + name, Role: r, Layer: l, Shape: shape, Axes: axes})
		}
		add("input_layernorm.weight", InputNormWeight, []int{d}, AxisHidden)
		if nemo {
			add("input_layernorm.bias", InputNormBias, []int{d}, AxisHidden)
		}
		add("self_attn.q_proj.weight", QProj, []int{q, d}, AxisQ, AxisHidden)
		add("self_attn.k_proj.weight", KProj, []int{kv, d}, AxisKV, AxisHidden)
		add("self_attn.v_proj.weight", VProj, []int{kv, d}, AxisKV, AxisHidden)
		add("self_attn.o_proj.weight", OProj, []int{d, q}, AxisHidden, AxisQ)
		add("post_attention_layernorm.weight", PostNormWeight, []int{d}, AxisHidden)
		if nemo {
			add("post_attention_layernorm.bias", PostNormBias, []int{d}, AxisHidden)
		} else {
			add("mlp.gate_proj.weight", GateProj, []int{f, d}, AxisFFN, AxisHidden)
		}
		add("mlp.up_proj.weight", UpProj, []int{f, d}, AxisFFN, AxisHidden)
		add("mlp.down_proj.weight", DownProj, []int{d, f}, AxisHidden, AxisFFN)
	}
	ps = append(ps, Param{Name: "model.norm.weight", Role: FinalNormWeight, Layer: -1, Shape: []int{d}, Axes: []Axis{AxisHidden}})
	if nemo {
		ps = append(ps, Param{Name: "model.norm.bias", Role: FinalNormBias, Layer: -1, Shape: []int{d}, Axes: []Axis{AxisHidden}})
	}
	if !c.TieEmbeddings {
		ps = append(ps, Param{Name: "lm_head.weight", Role: LMHead, Layer: -1, Shape: []int{v, d}, Axes: []Axis{AxisVocab, AxisHidden}})
	}
	return ps
}

// NumParams returns the total and non-embedding parameter counts (the
// input embedding and lm_head are the embedding parameters).
func (c *Config) NumParams() (total, nonEmbedding int64) {
	for _, p := range c.Params() {
		n := int64(p.Numel())
		total += n
		if p.Role != Embed && p.Role != LMHead {
			nonEmbedding += n
		}
	}
	return total, nonEmbedding
}

// ForwardFLOPs counts the floating-point operations of a forward pass over
// batch sequences of seq tokens, two per multiply-add: every parameter but
// the embedding table once per token, the LM head included (a tied head
// counts as well), and causal attention's two products, QKᵀ and PV, over
// the seq(seq+1)/2 visible pairs of each head.
func (c *Config) ForwardFLOPs(batch, seq int) float64 {
	_, nonEmb := c.NumParams()
	tokens := float64(batch * seq)
	linear := 2 * tokens * float64(nonEmb+int64(c.VocabSize*c.HiddenSize))
	attn := 2 * 2 * float64(batch) * float64(seq*(seq+1)/2) * float64(c.NumHeads*c.HeadDim) * float64(c.NumLayers)
	return linear + attn
}
