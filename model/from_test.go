package model

import (
	"math"
	"testing"

	"github.com/minitron/minitron/backend"
)

// TestPassFromLayer: a pass that starts at layer l from the stream a whole
// pass had there gives the same loss, to the bit, with and without a layer
// removed, and runs neither the embedding nor the layers before l.
func TestPassFromLayer(t *testing.T) {
	for _, name := range []string{"nemotron-tiny", "llama-tiny"} {
		t.Run(name, func(t *testing.T) {
			m, g := loadFixture(t, name)
			ids, shape := goldenIDs(t, g, "input_ids")
			B, T := shape[0], shape[1]
			L, D := m.Config.NumLayers, m.Config.HiddenSize
			b := m.Backend
			a, err := m.NewActivations(B*T, false)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Free(b)
			targets := NextTokenTargets(ids, B, T)
			in := Input{B: B, T: T, IDs: ids}
			// The stream entering each layer, kept from a whole pass.
			streams := make([]backend.Tensor, L+1)
			keepIn := func(site Site, l int, x backend.Tensor) error {
				if site != SiteLayerIn {
					return nil
				}
				s, err := b.New(b.FloatDType(), B*T, D)
				if err != nil {
					return err
				}
				streams[l] = s
				return b.Copy(s, x)
			}
			whole, err := m.Loss(a, in, targets, Options{Observer: keepIn})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				for _, s := range streams {
					if s != nil {
						b.Free(s)
					}
				}
			}()
			for l := 1; l < L; l++ {
				for _, skip := range []bool{false, true} {
					sk := make([]bool, L)
					sk[l] = skip
					want, err := m.Loss(a, in, targets, Options{Skip: sk})
					if err != nil {
						t.Fatal(err)
					}
					if !skip && want != whole {
						t.Fatalf("the whole pass is not deterministic: %v then %v", whole, want)
					}
					var seen []int
					count := func(site Site, layer int, _ backend.Tensor) error {
						if site == SiteEmbed || site == SiteLayerIn {
							seen = append(seen, layer)
						}
						return nil
					}
					got, err := m.Loss(a, in, targets, Options{Skip: sk, From: l, FromHidden: streams[l], Observer: count})
					if err != nil {
						t.Fatal(err)
					}
					if math.Float64bits(got) != math.Float64bits(want) {
						t.Errorf("from layer %d (skip %v): loss %v, want %v", l, skip, got, want)
					}
					first := l
					if skip {
						first = l + 1
					}
					if len(seen) != L-first || len(seen) > 0 && seen[0] != first {
						t.Errorf("from layer %d (skip %v): layers run %v, want %d..%d", l, skip, seen, first, L-1)
					}
				}
			}
			for _, c := range []struct {
				name string
				opt  Options
			}{
				{"negative", Options{From: -1, FromHidden: streams[1]}},
				{"past the last layer", Options{From: L + 1, FromHidden: streams[1]}},
				{"no stream", Options{From: 1}},
				{"stream of another shape", Options{From: 1, FromHidden: a.ids}},
			} {
				if _, err := m.Loss(a, in, targets, c.opt); err == nil {
					t.Errorf("%s: no error", c.name)
				}
			}
		})
	}
}
