package importance

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/backendtest"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/internal/fixture"
	"github.com/minitron/minitron/model"
)

const fixtures = "../testdata/hf"

var fixtureModels = []string{"nemotron-tiny", "nemotron-odd", "llama-tiny"}

var relErr = backendtest.RelErr[float32]

// loadFixture loads a model and its importance goldens.
func loadFixture(t *testing.T, name string) (*model.Model, *checkpoints.Tensors, []int32, int, int) {
	t.Helper()
	m, err := model.Load(filepath.Join(fixtures, name), cpu.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	g := fixture.Goldens(t, name, "importance.safetensors")
	ids, shape := fixture.IDs(t, g, "calibration_ids")
	return m, g, ids, shape[0], shape[1]
}

// TestParity: every score matches the fixture's within 1e-4.
func TestParity(t *testing.T) {
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			m, g, ids, n, T := loadFixture(t, name)
			// Batches of 3 and 1 sequences: the result must not depend on them.
			for _, bs := range []int{3, 4} {
				s, err := Estimate(context.Background(), m, ids, n, T, Options{Depth: true, BatchSize: bs})
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range []struct {
					name string
					got  []float32
				}{{NameHead, flatten(s.Head)}, {NameNeuron, flatten(s.Neuron)}, {NameEmbedding, s.Embedding},
					{NameLayerBI, s.LayerBI}, {NameLayerLoss, s.LayerLossWithout}, {NameCalibLoss, []float32{s.CalibrationLoss}}} {
					want, err := g.Float32(c.name)
					if err != nil {
						t.Fatal(err)
					}
					if e := relErr(c.got, want); e > 1e-4 {
						t.Errorf("batch %d: %s: relative error %.3g", bs, c.name, e)
					}
				}
			}
		})
	}
}

func TestSaveLoad(t *testing.T) {
	m, _, ids, n, T := loadFixture(t, "llama-tiny")
	s, err := Estimate(context.Background(), m, ids, n, T, Options{Agg: Aggregation{Seq: "l2", Batch: "var"}, NeuronSite: "pre"})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "scores.safetensors")
	if err := s.Save(p); err != nil {
		t.Fatal(err)
	}
	r, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if relErr(flatten(r.Neuron), flatten(s.Neuron)) != 0 || r.Meta["aggregation"] != "batch=var, seq=l2" || r.Meta["neuron_site"] != "pre" || r.Meta["calibration_ids"] != HashIDs(ids) || r.LayerLossWithout != nil {
		t.Fatalf("round trip: %+v", r.Meta)
	}
}

// TestAggregations checks each aggregation against a direct computation on
// a channel whose per-token values are known.
func TestAggregations(t *testing.T) {
	// Two sequences of three tokens, one channel.
	seqs := [][]float32{{1, -2, 3}, {-4, 0, 2}}
	for _, c := range []struct {
		agg  Aggregation
		want float64
	}{
		{Aggregation{"mean", "l2"}, math.Sqrt(math.Pow(2, 2) + math.Pow(2, 2))},
		{Aggregation{"mean", "mean"}, 2},
		{Aggregation{"l2", "mean"}, (math.Sqrt(14) + math.Sqrt(20)) / 2},
		{Aggregation{"var", "mean"}, (14.0/3 - math.Pow(2.0/3, 2) + 20.0/3 - math.Pow(2.0/3, 2)) / 2},
		{Aggregation{"mean", "var"}, 0},
	} {
		st := newStat(c.agg, 1)
		for _, s := range seqs {
			st.addSequence(s, 3, 1, make([]float64, 1), make([]float64, 1))
		}
		if got := float64(st.result()[0]); math.Abs(got-c.want) > 1e-6 {
			t.Errorf("%v: %v, want %v", c.agg, got, c.want)
		}
	}
}

// outOfMemory is a backend whose allocations fail, as a full GPU's do.
type outOfMemory struct{ backend.Backend }

func (outOfMemory) New(backend.DType, ...int) (backend.Tensor, error) {
	return nil, errors.New("out of device memory")
}

// TestAllocationFailure: a workspace that cannot be allocated is an error,
// not a crash.
func TestAllocationFailure(t *testing.T) {
	m, _, ids, n, T := loadFixture(t, "nemotron-tiny")
	m.Backend = outOfMemory{m.Backend}
	_, err := Estimate(context.Background(), m, ids, n, T, Options{})
	if err == nil || !strings.Contains(err.Error(), "out of device memory") {
		t.Fatalf("error %v, want the allocation's", err)
	}
}
