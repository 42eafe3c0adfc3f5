package prune

import (
	"fmt"
	"math"
	"sort"

	"github.com/minitron/minitron/model"
)

// Space is the architecture search space of homogeneous candidates.
type Space struct {
	Layers     []int     // candidate layer counts
	Heads      []int     // candidate query head counts
	MLPFactors []float64 // intermediate size = factor × hidden
	Hidden     []int     // candidate hidden sizes
}

// PaperSpace is the Minitron-4B search space: layers 29–32, heads
// {24, 32, 48}, MLP factor {2.5, 3, 3.5, 4}, hidden 2560–4608.
func PaperSpace() Space {
	return Space{
		Layers:     []int{29, 30, 31, 32},
		Heads:      []int{24, 32, 48},
		MLPFactors: []float64{2.5, 3, 3.5, 4},
		Hidden:     []int{2560, 3072, 3584, 4096, 4608},
	}
}

// Candidate is one shape of the search and its exact parameter count.
type Candidate struct {
	Layers, Hidden, Heads, FFN int
	MLPFactor                  float64
	// Drop lists the source layers a depth candidate drops (a contiguous
	// block); empty: the least important layers go (Targets.Layers).
	Drop   []int `json:",omitempty"`
	Params int64
	// Deviation is (Params - target) / target.
	Deviation float64
}

func (c Candidate) String() string {
	if len(c.Drop) > 0 {
		return fmt.Sprintf("layers %d (dropping %d-%d), hidden %d, heads %d, MLP %d: %d params", c.Layers, c.Drop[0], c.Drop[len(c.Drop)-1], c.Hidden, c.Heads, c.FFN, c.Params)
	}
	return fmt.Sprintf("layers %d, hidden %d, heads %d, MLP %d (x%.1f): %d params (%+.1f%%)", c.Layers, c.Hidden, c.Heads, c.FFN, c.MLPFactor, c.Params, 100*c.Deviation)
}

// BlockCandidates lists every way to drop one contiguous block of n layers
// from the source, first layer first (the depth pruning of
// arXiv:2408.11796 §2); the width stays the source's.
func BlockCandidates(src *model.Config, n int) ([]Candidate, error) {
	if n < 1 || n >= src.NumLayers {
		return nil, fmt.Errorf("prune: a block of %d layers: the model has %d layers; drop 1 to %d", n, src.NumLayers, src.NumLayers-1)
	}
	var out []Candidate
	for i := 0; i+n <= src.NumLayers; i++ {
		c := Candidate{Layers: src.NumLayers - n, Hidden: src.HiddenSize, Heads: src.NumHeads, FFN: src.IntermediateSize,
			MLPFactor: float64(src.IntermediateSize) / float64(src.HiddenSize)}
		for l := i; l < i+n; l++ {
			c.Drop = append(c.Drop, l)
		}
		c.Params, _ = c.Config(src).NumParams()
		out = append(out, c)
	}
	return out, nil
}

// Config returns the source config reshaped to the candidate.
func (c Candidate) Config(src *model.Config) *model.Config {
	t := *src
	t.NumLayers, t.HiddenSize, t.NumHeads, t.IntermediateSize = c.Layers, c.Hidden, c.Heads, c.FFN
	return &t
}

// Search lists every candidate of the space that the source can be pruned
// to (no dimension grows, heads divide into the KV groups) whose parameter
// count is within tolerance of target, closest first. Counts are exact,
// from the parameter table; no model is built.
func Search(src *model.Config, target float64, tolerance float64, s Space) ([]Candidate, error) {
	if target <= 0 || tolerance < 0 {
		return nil, fmt.Errorf("prune: target %v must be positive and tolerance %v non-negative", target, tolerance)
	}
	var out []Candidate
	for _, L := range s.Layers {
		for _, H := range s.Heads {
			for _, D := range s.Hidden {
				for _, f := range s.MLPFactors {
					F := int(math.Round(f * float64(D)))
					if L < 1 || L > src.NumLayers || H < 1 || H > src.NumHeads || H%src.NumKVHeads != 0 ||
						D < 1 || D > src.HiddenSize || F < 1 || F > src.IntermediateSize {
						continue
					}
					c := Candidate{Layers: L, Hidden: D, Heads: H, FFN: F, MLPFactor: f}
					c.Params, _ = c.Config(src).NumParams()
					c.Deviation = (float64(c.Params) - target) / target
					if math.Abs(c.Deviation) <= tolerance {
						out = append(out, c)
					}
				}
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return math.Abs(out[i].Deviation) < math.Abs(out[j].Deviation) })
	return out, nil
}
