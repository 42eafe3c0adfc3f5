package model

// Memory estimates, in bytes, for running and training a model. They count
// the tensors this package allocates; package train adds the optimizer's
// (train.PlanMemory).

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

// Elems counts tensor elements by storage: floats stored in the backend's
// float dtype (4 bytes on the CPU, 2 in bfloat16 on a GPU), float32
// statistics (norm statistics, log-sum-exp, per-row losses) and int32
// indices.
type Elems struct{ Float, F32, I32 int64 }

// Bytes is the size of the elements with floats of floatBytes bytes.
func (e Elems) Bytes(floatBytes int) int64 {
	return e.Float*int64(floatBytes) + 4*(e.F32+e.I32)
}

func (e Elems) add(o Elems) Elems { return Elems{e.Float + o.Float, e.F32 + o.F32, e.I32 + o.I32} }

// layerElems are one layer's forward activations over n rows (as
// NewActivations allocates them; keep: the down_proj input has its own
// tensor, as backward needs it).
func (c *Config) layerElems(n int64, keep bool) Elems {
	d, q, kv, f := int64(c.HiddenSize), int64(c.NumHeads*c.HeadDim), int64(c.NumKVHeads*c.HeadDim), int64(c.IntermediateSize)
	e := Elems{Float: n * (d + q + 2*kv + q + d + f), F32: n * int64(c.NumHeads)} // n1, q, k, v, att, n2, up; lse
	if c.Arch == Nemotron {
		e.F32 += 4 * n // two LayerNorm (mean, rstd) pairs
	} else {
		e.F32 += 2 * n
		e.Float += n * f // gate
	}
	if keep {
		e.Float += n * f // act
	}
	return e
}

// TrainingActivationElems counts the workspace of a forward and backward
// pass over n rows, as NewActivations (kept for backward), the final
// norm, and the backward state allocate it: every layer's activations and
// residual streams, one layer's activation gradients (reused), one chunk
// of logits. With recompute, only the residual stream entering each layer
// is kept and one layer's activations are live at a time (the estimate for
// full activation recomputation, which this package does not implement yet).
func (c *Config) TrainingActivationElems(n int, recompute bool) Elems {
	N, L := int64(n), int64(c.NumLayers)
	d, q, kv, f := int64(c.HiddenSize), int64(c.NumHeads*c.HeadDim), int64(c.NumKVHeads*c.HeadDim), int64(c.IntermediateSize)
	sets, mids := L, L
	if recompute {
		sets, mids = 1, 1
	}
	var e Elems
	for range sets {
		e = e.add(c.layerElems(N, true))
	}
	e.Float += (L+1)*N*d + mids*N*d // H, Mid
	e.I32 += 2 * N                  // ids, positions
	stat := int64(1)
	if c.Arch == Nemotron {
		stat = 2
	}
	e.F32 += stat * N // final norm statistics
	e.Float += N * d  // final norm output
	// Backward: dh, dmid, dtmp, dn, dfinal; dq, datt; dk, dv; dact, dup
	// (and dgate); logits of one chunk of rows; per-row losses.
	e.Float += N * (5*d + 2*q + 2*kv + 2*f)
	if c.Arch == Llama {
		e.Float += N * f
	}
	e.Float += min(N, int64(LossChunk(c.VocabSize))) * int64(c.VocabSize)
	e.F32 += N
	return e
}

// ForwardActivationElems counts the workspace of a forward pass over n
// rows without backward, up to the final norm (a teacher's forward in
// distillation: its logits are computed a chunk at a time by the loss).
func (c *Config) ForwardActivationElems(n int) Elems {
	N, d := int64(n), int64(c.HiddenSize)
	e := c.layerElems(N, false)
	e.Float += 2 * N * d // the residual stream, the final norm output
	e.I32 += 2 * N
	if c.Arch == Nemotron {
		e.F32 += 2 * N
	} else {
		e.F32 += N
	}
	return e
}

// TrainingActivationBytes is the float32 (CPU) workspace of a forward and
// backward pass over n rows.
func (c *Config) TrainingActivationBytes(n int) int64 {
	return c.TrainingActivationElems(n, false).Bytes(4)
}

// TrainingBytes is the memory of AdamW training on the CPU: float32
// weights, gradients and two moments, plus the activations of n rows.
func (c *Config) TrainingBytes(n int) int64 {
	return 4*c.WeightBytes() + c.TrainingActivationBytes(n)
}
