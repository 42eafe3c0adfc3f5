package model

import (
	"fmt"

	"github.com/minitron/minitron/backend"
)

// SetWeights makes ws (aligned with Params, e.g. views into one buffer
// that a data-parallel trainer gathers in one collective) the model's
// weights, and points the named fields at them. The tensors it replaces
// are not freed.
func (m *Model) SetWeights(ws []backend.Tensor) {
	if len(ws) != len(m.Params) {
		panic(fmt.Sprintf("model: SetWeights with %d tensors for %d parameters", len(ws), len(m.Params)))
	}
	copy(m.Weights, ws)
	m.bind()
}

// GradsOf makes Grads of tensors ts (aligned with Params, e.g. views into
// one buffer that a data-parallel trainer reduces in one collective),
// with the named views. Freeing the Grads frees the tensors.
func (m *Model) GradsOf(ts []backend.Tensor) *Grads {
	if len(ts) != len(m.Params) {
		panic(fmt.Sprintf("model: GradsOf with %d tensors for %d parameters", len(ts), len(m.Params)))
	}
	g := &Grads{T: ts}
	shadow := &Model{Config: m.Config, Params: m.Params, Weights: ts}
	shadow.bind()
	g.Embed, g.LMHead, g.NormW, g.NormB, g.Layers = shadow.Embed, shadow.LMHead, shadow.NormW, shadow.NormB, shadow.Layers
	return g
}
