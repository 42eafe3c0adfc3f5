package importance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
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

// TestBlockBI: the Block Importance of every block of consecutive layers
// whose output transformers exposes (hidden.0 the embeddings, hidden.i the
// output of layer i-1 for i < L) matches 1 - mean cos computed in float64
// from its hidden states; single-layer blocks are LayerBI; a token sample
// (when the states do not fit blockBudget) estimates the same values; the
// scores file keeps them.
func TestBlockBI(t *testing.T) {
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			m, err := model.Load(filepath.Join(fixtures, name), cpu.New(), nil)
			if err != nil {
				t.Fatal(err)
			}
			g, err := checkpoints.Open(filepath.Join(fixtures, name, "golden.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			v, shape, err := g.Int64("input_ids")
			if err != nil {
				t.Fatal(err)
			}
			ids := make([]int32, len(v))
			for i, x := range v {
				ids[i] = int32(x)
			}
			n, T, L, D := shape[0], shape[1], m.Config.NumLayers, m.Config.HiddenSize
			s, err := Estimate(context.Background(), m, ids, n, T, Options{BatchSize: 1})
			if err != nil {
				t.Fatal(err)
			}
			hidden := make([][]float32, L)
			for i := range L {
				if hidden[i], err = g.Float32(fmt.Sprintf("hidden.%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			checked := 0
			for i := range L {
				if math.Abs(float64(s.BlockBI[i][0]-s.LayerBI[i])) > 1e-6 {
					t.Errorf("block %d..%d: %v, LayerBI %v", i, i, s.BlockBI[i][0], s.LayerBI[i])
				}
				for j := i; j+1 < L; j++ {
					var sum float64
					for r := range n * T {
						sum += cosine(hidden[i][r*D:(r+1)*D], hidden[j+1][r*D:(r+1)*D])
					}
					want := 1 - sum/float64(n*T)
					if got := float64(s.BlockBI[i][j-i]); math.Abs(got-want) > 1e-4*math.Max(1, math.Abs(want)) {
						t.Errorf("block %d..%d: %v, want %v", i, j, got, want)
					}
					checked++
				}
			}
			if L > 2 && checked < 3 {
				t.Fatalf("only %d blocks checked", checked)
			}
			// A sample of a quarter of each pass's tokens.
			old := blockBudget
			blockBudget = (L + 1) * D * 4 * T / 4
			sampled, err := Estimate(context.Background(), m, ids, n, T, Options{BatchSize: 1})
			blockBudget = old
			if err != nil {
				t.Fatal(err)
			}
			if e := relErr(flatten(sampled.BlockBI), flatten(s.BlockBI)); e == 0 || e > 0.3 {
				t.Errorf("sampled block importance: relative error %.3g against all tokens", e)
			}
			p := filepath.Join(t.TempDir(), "scores.safetensors")
			if err := s.Save(p); err != nil {
				t.Fatal(err)
			}
			r, err := Load(p)
			if err != nil || fmt.Sprint(r.BlockBI) != fmt.Sprint(s.BlockBI) {
				t.Fatalf("round trip: %v %v, want %v", err, r.BlockBI, s.BlockBI)
			}
		})
	}
}

// BenchmarkBlockImportance: the host-side cost per forward pass of block
// importance (every pair of the L+1 hidden states of the sampled tokens)
// against its anchor, the per-layer Block Importance Estimate has always
// computed (L cosines of every token), at the Nemotron-4 15B width for a
// pass of 2048 tokens. Compare the two ns/op.
func BenchmarkBlockImportance(b *testing.B) {
	const L, D, n = 32, 6144, 2048
	v := make([]float32, n*D)
	for i := range v {
		v[i] = float32(math.Sin(float64(i)))
	}
	b.Run("anchor-layer-bi", func(b *testing.B) {
		for range b.N {
			var s float64
			for range L {
				for r := range n {
					s += cosine(v[r*D:(r+1)*D], v[r*D:(r+1)*D])
				}
			}
		}
	})
	b.Run("block-bi", func(b *testing.B) {
		bs := newBlockStats(L, D)
		for range b.N {
			bs.begin(n)
			for l := range L + 1 {
				bs.keep(l, v)
			}
			bs.end()
		}
	})
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

// TestDepthPassesFromKeptStreams: the depth passes that start from the
// layer inputs kept by the calibration pass give every score, to the bit,
// that passes run whole give.
func TestDepthPassesFromKeptStreams(t *testing.T) {
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			m, _, ids, n, T := loadFixture(t, name)
			for _, bs := range []int{3, 4} {
				opt := Options{Depth: true, BatchSize: bs}
				kept, err := Estimate(context.Background(), m, ids, n, T, opt)
				if err != nil {
					t.Fatal(err)
				}
				saved := snapshotBudget
				snapshotBudget = 0
				whole, err := Estimate(context.Background(), m, ids, n, T, opt)
				snapshotBudget = saved
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(kept, whole) {
					t.Errorf("batch %d: scores differ:\nkept streams %v\nwhole passes %v", bs, kept.LayerLossWithout, whole.LayerLossWithout)
				}
			}
		})
	}
}
