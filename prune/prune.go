// Package prune slices a model to a smaller homogeneous shape using
// importance scores: the most important embedding channels (globally), query
// heads (the same number in every KV group, KV groups kept), MLP neurons and
// layers. Kept indices stay in ascending order, so the student is a standard
// checkpoint of the same architecture. Tensors stream one at a time from the
// memory-mapped source, in the source dtype.
package prune

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/minitron/minitron/importance"
	"github.com/minitron/minitron/model"
)

// Targets is the shape to prune to; zero values keep the source's size.
type Targets struct {
	Hidden int // embedding channels
	Heads  int // query heads (a multiple of the KV heads)
	FFN    int // MLP neurons
	// Layers keeps this many layers, dropping the least important by
	// DepthMetric; DropLayers drops the listed layers instead.
	Layers     int
	DropLayers []int
	// DepthMetric ranks layers: "bi" (Block Importance, default) or
	// "loss" (LM loss with the layer removed; higher means more important)
	// drop the least important single layers; "block-bi" drops the one
	// contiguous block of layers of the lowest Block Importance (1 − cos
	// of the block's input and output), as Sreenivas et al. 2024
	// (arXiv:2408.11796 §2) prune depth.
	DepthMetric string
	// Divisor: the hidden size must be a multiple of it (default 1).
	Divisor int
}

// Plan is what a prune keeps.
type Plan struct {
	Source, Target *model.Config
	Hidden         []int   // kept embedding channels
	Layers         []int   // kept source layers, ascending
	Heads          [][]int // per kept layer, kept query heads
	FFN            [][]int // per kept layer, kept neurons
	ParamsBefore   int64
	ParamsAfter    int64
}

// NewPlan validates the targets against the model and its scores and
// chooses what to keep. Nothing is read or written.
func NewPlan(src *model.Config, s *importance.Scores, t Targets) (*Plan, error) {
	if err := checkScores(src, s); err != nil {
		return nil, err
	}
	if t.Divisor <= 0 {
		t.Divisor = 1
	}
	if t.DepthMetric == "" {
		t.DepthMetric = "bi"
	}
	tgt := *src
	var errs []string
	set := func(name string, v, source int, dst *int) {
		switch {
		case v == 0:
		case v < 0 || v > source:
			errs = append(errs, fmt.Sprintf("%s %d must be in [1, %d] (the source has %d)", name, v, source, source))
		default:
			*dst = v
		}
	}
	set("--hidden-size", t.Hidden, src.HiddenSize, &tgt.HiddenSize)
	set("--num-attention-heads", t.Heads, src.NumHeads, &tgt.NumHeads)
	set("--intermediate-size", t.FFN, src.IntermediateSize, &tgt.IntermediateSize)
	if tgt.NumHeads%src.NumKVHeads != 0 {
		errs = append(errs, fmt.Sprintf("--num-attention-heads %d is not a multiple of the %d KV groups (KV heads are kept; use one of %s)",
			tgt.NumHeads, src.NumKVHeads, multiples(src.NumKVHeads, src.NumHeads)))
	}
	if tgt.HiddenSize%t.Divisor != 0 {
		errs = append(errs, fmt.Sprintf("--hidden-size %d is not a multiple of --divisor %d", tgt.HiddenSize, t.Divisor))
	}
	if t.DepthMetric != "bi" && t.DepthMetric != "loss" && t.DepthMetric != "block-bi" {
		errs = append(errs, fmt.Sprintf("depth metric %q: use bi, loss or block-bi", t.DepthMetric))
	}
	layers, err := keptLayers(src, s, t)
	if err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("prune: %s", strings.Join(errs, "; "))
	}
	tgt.NumLayers = len(layers)
	p := &Plan{Source: src, Target: &tgt, Layers: layers}
	p.Hidden = topK(s.Embedding, tgt.HiddenSize)
	perGroup, group := tgt.NumHeads/src.NumKVHeads, src.NumHeads/src.NumKVHeads
	for _, l := range layers {
		var heads []int
		for g := range src.NumKVHeads {
			for _, h := range topK(s.Head[l][g*group:(g+1)*group], perGroup) {
				heads = append(heads, g*group+h)
			}
		}
		p.Heads = append(p.Heads, heads)
		p.FFN = append(p.FFN, topK(s.Neuron[l], tgt.IntermediateSize))
	}
	p.ParamsBefore, _ = src.NumParams()
	p.ParamsAfter, _ = tgt.NumParams()
	return p, nil
}

func multiples(k, upTo int) string {
	var s []string
	for v := k; v <= upTo; v += k {
		s = append(s, fmt.Sprint(v))
	}
	return strings.Join(s, ", ")
}

// RandomScores are scores drawn uniformly at random for a model of config
// c: pruning with them keeps random embedding channels, heads (the same
// number per KV group) and neurons at the target shape, the baseline that
// shows what the importance estimates are worth. The same seed gives the
// same scores.
func RandomScores(c *model.Config, seed uint64) *importance.Scores {
	r := rand.New(rand.NewPCG(seed, 0x7a4d0))
	vec := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = r.Float32()
		}
		return v
	}
	s := &importance.Scores{Embedding: vec(c.HiddenSize), LayerBI: vec(c.NumLayers), Meta: map[string]string{"random_seed": fmt.Sprint(seed)}}
	for range c.NumLayers {
		s.Head = append(s.Head, vec(c.NumHeads))
		s.Neuron = append(s.Neuron, vec(c.IntermediateSize))
	}
	return s
}

// checkScores makes sure scores belong to a model of this shape.
func checkScores(c *model.Config, s *importance.Scores) error {
	bad := func(what string, got, want int) error {
		return fmt.Errorf("prune: the scores have %s %d, the model %d: they were computed for another model", what, got, want)
	}
	switch {
	case len(s.Head) != c.NumLayers:
		return bad("layers", len(s.Head), c.NumLayers)
	case len(s.Head[0]) != c.NumHeads:
		return bad("heads", len(s.Head[0]), c.NumHeads)
	case len(s.Neuron) != c.NumLayers || len(s.Neuron[0]) != c.IntermediateSize:
		return bad("MLP neurons", len(s.Neuron[0]), c.IntermediateSize)
	case len(s.Embedding) != c.HiddenSize:
		return bad("embedding channels", len(s.Embedding), c.HiddenSize)
	case len(s.LayerBI) != c.NumLayers:
		return bad("layer scores", len(s.LayerBI), c.NumLayers)
	}
	return nil
}

// keptLayers picks the source layers to keep.
func keptLayers(c *model.Config, s *importance.Scores, t Targets) ([]int, error) {
	L := c.NumLayers
	if t.Layers != 0 && len(t.DropLayers) > 0 {
		return nil, fmt.Errorf("give --num-layers or --drop-layers, not both")
	}
	drop := map[int]bool{}
	for _, l := range t.DropLayers {
		if l < 0 || l >= L {
			return nil, fmt.Errorf("--drop-layers: layer %d does not exist (the model has layers 0..%d)", l, L-1)
		}
		drop[l] = true
	}
	if t.Layers != 0 {
		if t.Layers < 1 || t.Layers > L {
			return nil, fmt.Errorf("--num-layers %d must be in [1, %d]", t.Layers, L)
		}
		switch t.DepthMetric {
		case "block-bi":
			start, err := LeastBlock(s, L-t.Layers)
			if err != nil {
				return nil, err
			}
			for l := start; l < start+L-t.Layers; l++ {
				drop[l] = true
			}
		default:
			score := s.LayerBI
			if t.DepthMetric == "loss" {
				if s.LayerLossWithout == nil {
					return nil, fmt.Errorf("the scores have no layer_loss_without (rerun importance with --depth) for --depth-metric loss")
				}
				score = s.LayerLossWithout
			}
			order := rank(score)
			for _, l := range order[t.Layers:] {
				drop[l] = true
			}
		}
	}
	var keep []int
	for l := range L {
		if !drop[l] {
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 {
		return nil, fmt.Errorf("every layer would be dropped")
	}
	return keep, nil
}

// LeastBlock returns the first layer of the contiguous block of n layers
// with the lowest Block Importance (the earliest on ties).
func LeastBlock(s *importance.Scores, n int) (int, error) {
	if n == 0 {
		return 0, nil
	}
	if s.BlockBI == nil {
		return 0, fmt.Errorf("the scores have no block importance (importance.block_bi; rescore with this version of minitron importance) for --depth-metric block-bi")
	}
	best := 0
	for i := 0; i+n <= len(s.BlockBI); i++ {
		if s.BlockBI[i][n-1] < s.BlockBI[best][n-1] {
			best = i
		}
	}
	return best, nil
}

// rank orders indices by score, highest first, lower index first on ties.
func rank(score []float32) []int {
	idx := make([]int, len(score))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return score[idx[a]] > score[idx[b]] })
	return idx
}

// topK returns the indices of the k highest scores, in ascending order.
func topK(score []float32, k int) []int {
	r := rank(score)[:k]
	sort.Ints(r)
	return r
}
