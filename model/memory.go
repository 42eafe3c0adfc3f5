package model

// Memory estimates, in bytes, for running and training a model with float32
// compute (the CPU backend). They count the tensors this package allocates.

// WeightBytes is the size of the weights in float32.
func (c *Config) WeightBytes() int64 {
	total, _ := c.NumParams()
	return 4 * total
}

// InferenceActivationBytes is the workspace of a forward pass over n rows
// without backward: one layer's activations (shared by all layers), the
// residual stream and the logits of logitRows rows.
func (c *Config) InferenceActivationBytes(n, logitRows int) int64 {
	d, q, kv, f := int64(c.HiddenSize), int64(c.NumHeads*c.HeadDim), int64(c.NumKVHeads*c.HeadDim), int64(c.IntermediateSize)
	per := 2*d + 2*q + 2*kv + int64(c.NumHeads) + f + 4 + 2 // norms, q/att, k/v, lse, MLP, stats, ids/pos
	if c.Arch == Llama {
		per += f
	}
	per += d + d // residual stream, final norm
	return 4 * (int64(n)*per + int64(logitRows)*int64(c.VocabSize))
}

// KVCacheBytes is the size of a KV cache of slots×maxT positions.
func (c *Config) KVCacheBytes(slots, maxT int) int64 {
	return 4 * 2 * int64(c.NumLayers) * int64(slots) * int64(maxT) * int64(c.NumKVHeads*c.HeadDim)
}

// TrainingActivationBytes is the workspace of a forward+backward pass over
// n rows: every layer's activations kept, plus the logits and their gradient.
func (c *Config) TrainingActivationBytes(n int) int64 {
	d, q, kv, f := int64(c.HiddenSize), int64(c.NumHeads*c.HeadDim), int64(c.NumKVHeads*c.HeadDim), int64(c.IntermediateSize)
	perLayer := 2*d + 2*q + 2*kv + int64(c.NumHeads) + 2*f + 4 + d + d // + residual in and mid
	if c.Arch == Llama {
		perLayer += f
	}
	L := int64(c.NumLayers)
	acts := int64(n) * (L*perLayer + 3*d + 2)
	logits := int64(n) * int64(c.VocabSize)
	grads := int64(n) * (4*d + 2*q + 2*kv + 3*f) // one layer's activation gradients, reused
	return 4 * (acts + logits + grads)
}

// TrainingBytes is the memory of AdamW training with float32 weights,
// gradients and two moments, plus the activations of n rows.
func (c *Config) TrainingBytes(n int) int64 {
	return 4*c.WeightBytes() + c.TrainingActivationBytes(n)
}
