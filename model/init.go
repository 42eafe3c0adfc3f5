package model

import (
	"math/rand/v2"

	"github.com/minitron/minitron/backend"
)

// Init sets fresh weights from the config: linear layers and embeddings
// drawn from N(0, initializer_range²), norm biases 0, and norm weights at
// the identity: 1 for RMSNorm, 0 for Nemotron's LayerNorm1P (which scales
// by weight+1). The draw depends only on seed and the parameter's position
// in the table, so it is reproducible and independent of the backend.
func (m *Model) Init(seed uint64) error {
	std := m.Config.InitializerRange
	for i, p := range m.Params {
		v := make([]float32, p.Numel())
		switch {
		case p.Role.IsNorm():
			if m.Config.Arch == Llama && (p.Role == InputNormWeight || p.Role == PostNormWeight || p.Role == FinalNormWeight) {
				for j := range v {
					v[j] = 1
				}
			}
		default:
			r := rand.New(rand.NewPCG(seed, uint64(i)))
			for j := range v {
				v[j] = float32(r.NormFloat64() * std)
			}
		}
		t, err := m.Backend.FromFloat32(v, p.Shape...)
		if err != nil {
			return err
		}
		if err := m.Backend.Copy(m.Weights[i], t); err != nil {
			return err
		}
		m.Backend.Free(t)
	}
	return nil
}

// Random makes a model with fresh weights (see Init).
func Random(cfg *Config, b backend.Backend, seed uint64) (*Model, error) {
	m, err := New(cfg, b)
	if err != nil {
		return nil, err
	}
	return m, m.Init(seed)
}
