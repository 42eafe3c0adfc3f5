package model

import (
	"math/rand/v2"
	"runtime"
	"sync"

	"github.com/minitron/minitron/backend"
)

// Init sets fresh weights from the config: linear layers and embeddings
// drawn from N(0, initializer_range²), norm biases 0, and norm weights at
// the identity: 1 for RMSNorm, 0 for Nemotron's LayerNorm1P (which scales
// by weight+1). The draw depends only on seed and the parameter's position
// in the table, so it is reproducible and independent of the backend.
//
// Parameters are drawn in parallel on all cores (each from its own
// stream, so the values do not depend on the order) and handed to the
// backend one at a time.
func (m *Model) Init(seed uint64) error {
	std := m.Config.InitializerRange
	var mu sync.Mutex // serializes backend calls
	var first error
	var wg sync.WaitGroup
	next := make(chan int)
	for range max(1, min(runtime.GOMAXPROCS(0), len(m.Params))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				p := m.Params[i]
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
				mu.Lock()
				if first == nil {
					first = m.Backend.Write(m.Weights[i], v)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range m.Params {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// Random makes a model with fresh weights (see Init).
func Random(cfg *Config, b backend.Backend, seed uint64) (*Model, error) {
	m, err := New(cfg, b)
	if err != nil {
		return nil, err
	}
	return m, m.Init(seed)
}
