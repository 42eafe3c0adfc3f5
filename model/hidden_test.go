package model

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
)

// TestHiddenLossGradient checks the hidden-state hooks of the backward
// pass against central finite differences of the total loss
// Σ CE + Σ_l c·⟨H[l], R_l⟩ + Σ_l c·⟨norm(H[l]), S_l⟩ for fixed random R_l
// and S_l (states taken as they are, the embedding output included, and
// after LayerNorm), on both architectures.
func TestHiddenLossGradient(t *testing.T) {
	for _, js := range []string{
		`{"architectures":["NemotronForCausalLM"],"vocab_size":37,"hidden_size":24,"num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":40,"partial_rotary_factor":0.5}`,
		`{"architectures":["LlamaForCausalLM"],"vocab_size":37,"hidden_size":24,"num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":40,"initializer_range":0.2}`,
	} {
		cfg, err := ParseConfig([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		t.Run(cfg.Architecture, func(t *testing.T) {
			b := cpu.New()
			m, err := Random(cfg, b, 3)
			if err != nil {
				t.Fatal(err)
			}
			const B, T, c = 2, 5, 0.7
			r := rand.New(rand.NewPCG(1, 2))
			ids := make([]int32, B*T)
			for i := range ids {
				ids[i] = int32(r.IntN(cfg.VocabSize))
			}
			targets := NextTokenTargets(ids, B, T)
			layers, norms := []int{0, 1, cfg.NumLayers}, []int{1, cfg.NumLayers}
			random := func() []float32 {
				v := make([]float32, B*T*cfg.HiddenSize)
				for i := range v {
					v[i] = float32(r.NormFloat64())
				}
				return v
			}
			R, S := map[int][]float32{}, map[int][]float32{}
			for _, l := range layers {
				R[l] = random()
			}
			for _, l := range norms {
				S[l] = random()
			}
			in := Input{B: B, T: T, IDs: ids}
			a, err := m.NewActivations(B*T, true)
			if err != nil {
				t.Fatal(err)
			}
			total := func() float64 {
				var hid float64
				obs := func(site Site, layer int, x backend.Tensor) error {
					var ref []float32
					switch site {
					case SiteEmbed:
						ref = R[0]
					case SiteLayerOut:
						ref = R[layer+1]
					case SiteNorm1:
						ref = S[layer]
					case SiteFinalNorm:
						ref = S[cfg.NumLayers]
					}
					if ref == nil {
						return nil
					}
					v, _ := b.ToFloat32(x)
					for i := range v {
						hid += c * float64(v[i]) * float64(ref[i])
					}
					return nil
				}
				ce, err := m.Loss(a, in, targets, Options{Observer: obs})
				if err != nil {
					t.Fatal(err)
				}
				return ce*float64(B*(T-1)) + hid
			}
			g, err := m.NewGrads()
			if err != nil {
				t.Fatal(err)
			}
			ce, free, err := CrossEntropyLoss(b, targets)
			if err != nil {
				t.Fatal(err)
			}
			defer free()
			calls := 0
			add := func(ref []float32, dh backend.Tensor, scale float32, logitLoss float64) error {
				calls++
				if logitLoss <= 0 {
					t.Errorf("logit loss %v passed to the hidden loss", logitLoss)
				}
				v := make([]float32, len(ref))
				for i := range v {
					v[i] = scale * c * ref[i]
				}
				rt, _ := b.FromFloat32(v, B*T, cfg.HiddenSize)
				return b.Add(dh, dh, rt)
			}
			hl := &HiddenLoss{Layers: layers, Norms: norms,
				Grad: func(l int, h, dh backend.Tensor, scale float32, logitLoss float64) error {
					return add(R[l], dh, scale, logitLoss)
				},
				NormGrad: func(l int, n, dn backend.Tensor, scale float32, logitLoss float64) error {
					if n != a.NormOut(l) {
						t.Errorf("norm of state %d: the hook got another tensor than NormOut", l)
					}
					return add(S[l], dn, scale, logitLoss)
				}}
			if _, err := m.LossAndGradHidden(a, in, ce, hl, 1, g); err != nil {
				t.Fatal(err)
			}
			if calls != len(layers)+len(norms) {
				t.Fatalf("hidden loss called %d times, want %d", calls, len(layers)+len(norms))
			}
			// A few elements of the embedding, of the first layer's query
			// and MLP weights, which only the states above them reach, and
			// of the norms the post-norm states pass through.
			check := []int{0, 2, 8}
			for pi, p := range m.Params {
				if p.Name == "model.layers.1.input_layernorm.weight" || p.Name == "model.norm.weight" {
					check = append(check, pi)
				}
			}
			for _, pi := range check {
				w := m.Weights[pi]
				wv := w.(*cpu.Tensor).Float32()
				gv := g.T[pi].(*cpu.Tensor).Float32()
				var num, den float64
				for _, j := range []int{0, 7, len(wv) / 2, len(wv) - 1} {
					old := wv[j]
					const eps = 1e-2
					wv[j] = old + eps
					up := total()
					wv[j] = old - eps
					down := total()
					wv[j] = old
					fd := (up - down) / (2 * eps)
					num += (fd - float64(gv[j])) * (fd - float64(gv[j]))
					den += fd * fd
				}
				if e := math.Sqrt(num / den); e > 2e-2 {
					t.Errorf("%s: gradient vs finite differences: relative error %.3g", m.Params[pi].Name, e)
				}
			}
		})
	}
}
