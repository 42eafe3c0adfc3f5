package model

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/backendtest"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/internal/fixture"
)

const fixtures = "../testdata/hf"

var fixtureModels = []string{"nemotron-tiny", "nemotron-odd", "llama-tiny"}

// relErr and goldenIDs are the shared test helpers.
var (
	relErr    = backendtest.RelErr[float32]
	goldenIDs = fixture.IDs
)

func loadFixture(t *testing.T, name string) (*Model, *checkpoints.Tensors) {
	t.Helper()
	m, err := Load(filepath.Join(fixtures, name), cpu.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return m, fixture.Goldens(t, name, "golden.safetensors")
}

func golden(t *testing.T, g *checkpoints.Tensors, name string) []float32 {
	t.Helper()
	v, err := g.Float32(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestParityLogitsAndHidden checks logits and every hidden state against
// transformers (float64 math) within 1e-4 relative error.
func TestParityLogitsAndHidden(t *testing.T) {
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			m, g := loadFixture(t, name)
			ids, shape := goldenIDs(t, g, "input_ids")
			a, err := m.NewActivations(len(ids), false)
			if err != nil {
				t.Fatal(err)
			}
			L := m.Config.NumLayers
			hidden := map[int][]float32{}
			obs := func(site Site, layer int, x backend.Tensor) error {
				i := -1
				switch {
				case site == SiteEmbed:
					i = 0
				case site == SiteLayerOut && layer < L-1:
					i = layer + 1
				case site == SiteFinalNorm:
					i = L
				}
				if i >= 0 {
					v, err := m.Backend.ToFloat32(x)
					hidden[i] = v
					return err
				}
				return nil
			}
			logits, err := m.Forward(a, Input{B: shape[0], T: shape[1], IDs: ids}, Options{Observer: obs})
			if err != nil {
				t.Fatal(err)
			}
			got, _ := m.Backend.ToFloat32(logits)
			if e := relErr(got, golden(t, g, "logits")); e > 1e-4 {
				t.Errorf("logits: relative error %.3g", e)
			} else {
				t.Logf("logits: relative error %.3g", e)
			}
			for i := 0; i <= L; i++ {
				if e := relErr(hidden[i], golden(t, g, fmt.Sprintf("hidden.%d", i))); e > 1e-4 {
					t.Errorf("hidden.%d: relative error %.3g", i, e)
				}
			}
		})
	}
}

// TestParityBF16 checks the bfloat16 checkpoints against logits computed
// from the rounded weights.
func TestParityBF16(t *testing.T) {
	for _, name := range fixtureModels {
		t.Run(name+"-bf16", func(t *testing.T) {
			m, g := loadFixture(t, name+"-bf16")
			if m.DiskDTypes[0] != backend.BF16 {
				t.Fatalf("disk dtype %v", m.DiskDTypes[0])
			}
			ids, shape := goldenIDs(t, g, "input_ids")
			a, err := m.NewActivations(len(ids), false)
			if err != nil {
				t.Fatal(err)
			}
			logits, err := m.Forward(a, Input{B: shape[0], T: shape[1], IDs: ids}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got, _ := m.Backend.ToFloat32(logits)
			if e := relErr(got, golden(t, g, "logits")); e > 1e-4 {
				t.Errorf("logits: relative error %.3g", e)
			}
		})
	}
}
