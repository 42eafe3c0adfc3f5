// Package importance scores the structures of a model on calibration data,
// as Minitron does, from activations alone (no gradients): attention heads,
// MLP neurons, embedding channels and layers. Statistics stream through the
// model's observer hook into accumulators of the size of the dimensions,
// so any amount of calibration data fits in memory.
package importance

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/model"
)

// Aggregation reduces per-token values to one score per channel: first over
// the tokens of each sequence (Seq), then over the sequences (Batch). Each
// is "mean" (mean of |x|), "l2" (square root of the sum of squares) or
// "var" (variance). Minitron's best is Seq mean, Batch l2, the default.
type Aggregation struct {
	Seq, Batch string
}

// DefaultAggregation is the paper's best combination: the mean over each
// sequence, then the L2 norm over the sequences.
func DefaultAggregation() Aggregation { return Aggregation{Seq: "mean", Batch: "l2"} }

func (a Aggregation) String() string { return fmt.Sprintf("batch=%s, seq=%s", a.Batch, a.Seq) }

// Validate checks the names.
func (a Aggregation) Validate() error {
	for _, s := range []string{a.Seq, a.Batch} {
		if s != "mean" && s != "l2" && s != "var" {
			return fmt.Errorf("importance: aggregation %q: use mean, l2 or var", s)
		}
	}
	return nil
}

// Options control Estimate.
type Options struct {
	Agg Aggregation
	// NeuronSite is "post" (down_proj input, after the activation; the
	// default) or "pre" (up_proj output, before it).
	NeuronSite string
	// BatchSize is the number of sequences per forward pass.
	BatchSize int
	// Depth also computes the loss with each layer removed (one more pass
	// over the calibration data per layer).
	Depth bool
	// Progress receives forward passes done out of the total.
	Progress func(done, total int)
}

// Scores are the importance estimates of a model.
type Scores struct {
	Head      [][]float32 // [layer][query head]
	Neuron    [][]float32 // [layer][MLP neuron]
	Embedding []float32   // [hidden channel]
	LayerBI   []float32   // [layer] 1 - mean cos(input, output)
	// BlockBI[i][j-i] is the Block Importance of the contiguous block of
	// layers i..j: 1 - mean cos(input of layer i, output of layer j).
	// BlockBI[i][0] is LayerBI[i] (up to the token sample; see blockBudget).
	BlockBI          [][]float32
	LayerLossWithout []float32 // [layer] LM loss with the layer removed (nil without Depth)
	CalibrationLoss  float32   // LM loss with every layer
	Meta             map[string]string
}

// channelStat aggregates per-token values of a set of channels.
type channelStat struct {
	agg        Aggregation
	sum, sumSq []float64 // over sequences of the per-sequence value
	n          int       // sequences
}

func newStat(agg Aggregation, dims int) *channelStat {
	return &channelStat{agg: agg, sum: make([]float64, dims), sumSq: make([]float64, dims)}
}

// addSequence folds one sequence of T tokens × dims values (row-major).
func (c *channelStat) addSequence(v []float32, T, dims int, seqVal []float64, tmp []float64) {
	for j := range seqVal {
		seqVal[j], tmp[j] = 0, 0
	}
	switch c.agg.Seq {
	case "mean":
		for t := range T {
			for j, x := range v[t*dims : (t+1)*dims] {
				seqVal[j] += math.Abs(float64(x))
			}
		}
		for j := range seqVal {
			seqVal[j] /= float64(T)
		}
	case "l2":
		for t := range T {
			for j, x := range v[t*dims : (t+1)*dims] {
				seqVal[j] += float64(x) * float64(x)
			}
		}
		for j := range seqVal {
			seqVal[j] = math.Sqrt(seqVal[j])
		}
	case "var":
		for t := range T {
			for j, x := range v[t*dims : (t+1)*dims] {
				seqVal[j] += float64(x)
				tmp[j] += float64(x) * float64(x)
			}
		}
		for j := range seqVal {
			m := seqVal[j] / float64(T)
			seqVal[j] = tmp[j]/float64(T) - m*m
		}
	}
	for j, s := range seqVal {
		c.sum[j] += s
		c.sumSq[j] += s * s
	}
	c.n++
}

func (c *channelStat) result() []float32 {
	out := make([]float32, len(c.sum))
	n := float64(c.n)
	for j := range out {
		switch c.agg.Batch {
		case "mean":
			out[j] = float32(c.sum[j] / n)
		case "l2":
			out[j] = float32(math.Sqrt(c.sumSq[j]))
		case "var":
			m := c.sum[j] / n
			out[j] = float32(c.sumSq[j]/n - m*m)
		}
	}
	return out
}

// blockBudget bounds the bytes of hidden states kept per forward pass for
// block importance: every token's states when they fit, otherwise an
// evenly spaced sample of the pass's tokens (the mean cosine over a
// sample estimates the mean over all; at the 15B's width, 20 tokens of
// each pass, 10k of the paper's 4M calibration tokens). That keeps the
// pairwise cosines, (L+1)·L/2 of them per token, to a fraction of the
// host time of the single layers' (BenchmarkBlockImportance: 0.4× at a
// pass of 2048 tokens, less for longer passes).
var blockBudget = 16 << 20

// blockStats accumulates the cosines between every pair of hidden states
// 0..L of sampled tokens.
type blockStats struct {
	L, D   int
	states [][]float32 // [state][row·D]
	norms  [][]float64 // [state][row] L2 norms
	rows   []int       // sampled rows of the current pass
	cos    [][]float64 // [i][j] summed cos(state i, state j), i < j
	n      int
}

func newBlockStats(L, D int) *blockStats {
	b := &blockStats{L: L, D: D, states: make([][]float32, L+1), norms: make([][]float64, L+1), cos: make([][]float64, L+1)}
	for i := range b.cos {
		b.cos[i] = make([]float64, L+1)
	}
	return b
}

// begin picks the rows of a pass of n tokens.
func (b *blockStats) begin(n int) {
	k := min(n, max(1, blockBudget/((b.L+1)*b.D*4)))
	b.rows = b.rows[:0]
	for r := range k {
		b.rows = append(b.rows, r*n/k)
	}
}

// keep stores state l (all rows, row-major [n, D]) for the sampled rows.
func (b *blockStats) keep(l int, v []float32) {
	s, nr := b.states[l][:0], b.norms[l][:0]
	for _, r := range b.rows {
		row := v[r*b.D : (r+1)*b.D]
		s = append(s, row...)
		var q float64
		for _, x := range row {
			q += float64(x) * float64(x)
		}
		nr = append(nr, math.Sqrt(q))
	}
	b.states[l], b.norms[l] = s, nr
}

// end folds the pass's states into the sums.
func (b *blockStats) end() {
	D := b.D
	for k := range b.rows {
		for i := 0; i <= b.L; i++ {
			x, nx := b.states[i][k*D:(k+1)*D], b.norms[i][k]
			for j := i + 1; j <= b.L; j++ {
				if ny := b.norms[j][k]; nx > 0 && ny > 0 {
					b.cos[i][j] += dot(x, b.states[j][k*D:(k+1)*D]) / (nx * ny)
				}
			}
		}
	}
	b.n += len(b.rows)
}

// result is BlockBI.
func (b *blockStats) result() [][]float32 {
	out := make([][]float32, b.L)
	for i := range b.L {
		for j := i; j < b.L; j++ {
			out[i] = append(out[i], float32(1-b.cos[i][j+1]/float64(b.n)))
		}
	}
	return out
}

// HashIDs identifies calibration data.
func HashIDs(ids []int32) string {
	h := sha256.New()
	var b [4]byte
	for _, id := range ids {
		binary.LittleEndian.PutUint32(b[:], uint32(id))
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// snapshotBudget bounds the layer inputs kept for the depth passes (bytes
// of float32; a variable so tests can force the passes that run whole).
var snapshotBudget int64 = 1 << 30

// Estimate scores m on n calibration sequences of T tokens (ids is n×T).
func Estimate(ctx context.Context, m *model.Model, ids []int32, n, T int, opt Options) (*Scores, error) {
	if opt.Agg == (Aggregation{}) {
		opt.Agg = DefaultAggregation()
	}
	if err := opt.Agg.Validate(); err != nil {
		return nil, err
	}
	if opt.NeuronSite == "" {
		opt.NeuronSite = "post"
	}
	if opt.NeuronSite != "post" && opt.NeuronSite != "pre" {
		return nil, fmt.Errorf("importance: neuron site %q: use post (down_proj input) or pre (up_proj output)", opt.NeuronSite)
	}
	if len(ids) != n*T || n < 1 || T < 2 {
		return nil, fmt.Errorf("importance: %d ids for %d sequences of %d tokens (need at least 2 tokens each)", len(ids), n, T)
	}
	for i, id := range ids {
		if id < 0 || int(id) >= m.Config.VocabSize {
			return nil, fmt.Errorf("importance: calibration token %d at sequence %d, position %d is outside the model's vocabulary of %d", id, i/T, i%T, m.Config.VocabSize)
		}
	}
	if opt.BatchSize <= 0 {
		opt.BatchSize = max(1, min(n, 8192/T))
	}
	c := m.Config
	L, H, hd, F, D := c.NumLayers, c.NumHeads, c.HeadDim, c.IntermediateSize, c.HiddenSize
	heads := make([]*channelStat, L)
	neurons := make([]*channelStat, L)
	norms := make([]*channelStat, 2*L)
	for l := range L {
		heads[l], neurons[l] = newStat(opt.Agg, H), newStat(opt.Agg, F)
		norms[2*l], norms[2*l+1] = newStat(opt.Agg, D), newStat(opt.Agg, D)
	}
	cosSum := make([]float64, L)
	blocks := newBlockStats(L, D)
	tokens := 0
	passes := (n + opt.BatchSize - 1) / opt.BatchSize
	total := passes
	if opt.Depth {
		total *= L + 1
	}
	done := 0
	b := m.Backend
	var lossSum float64
	var layerIn []float32
	seqBuf := make([]float64, max(H, F, D))
	tmpBuf := make([]float64, max(H, F, D))
	acts := map[int]*model.Activations{}
	defer func() {
		for _, a := range acts {
			a.Free(b)
		}
	}()
	workspace := func(rows int) (*model.Activations, error) {
		if a, ok := acts[rows]; ok {
			return a, nil
		}
		a, err := m.NewActivations(rows, false)
		if err != nil {
			return nil, err
		}
		acts[rows] = a
		return a, nil
	}
	var bs int // sequences in the current pass
	fold := func(stat *channelStat, v []float32, dims int) {
		for s := range bs {
			stat.addSequence(v[s*T*dims:(s+1)*T*dims], T, dims, seqBuf[:dims], tmpBuf[:dims])
		}
	}
	// snap, while a calibration pass keeps the layer inputs, is where.
	var snap []backend.Tensor
	obs := func(site model.Site, layer int, t backend.Tensor) error {
		if site == model.SiteLayerIn && snap != nil && snap[layer] != nil {
			if err := b.Copy(snap[layer], t); err != nil {
				return err
			}
		}
		switch site {
		case model.SiteLayerIn, model.SiteLayerOut, model.SiteNorm1, model.SiteNorm2, model.SiteAttnOut, model.SiteMLPAct, model.SiteMLPPre:
		default:
			return nil
		}
		if (site == model.SiteMLPAct && opt.NeuronSite != "post") || (site == model.SiteMLPPre && opt.NeuronSite != "pre") {
			return nil
		}
		v, err := b.ToFloat32(t)
		if err != nil {
			return err
		}
		switch site {
		case model.SiteLayerIn:
			layerIn = v
			if layer == 0 {
				blocks.keep(0, v)
			}
		case model.SiteLayerOut:
			for r := range bs * T {
				cosSum[layer] += cosine(layerIn[r*D:(r+1)*D], v[r*D:(r+1)*D])
			}
			blocks.keep(layer+1, v)
		case model.SiteNorm1:
			fold(norms[2*layer], v, D)
		case model.SiteNorm2:
			fold(norms[2*layer+1], v, D)
		case model.SiteMLPAct, model.SiteMLPPre:
			fold(neurons[layer], v, F)
		case model.SiteAttnOut:
			hn := make([]float32, bs*T*H)
			for r := range bs * T {
				for h := range H {
					var s float64
					for _, x := range v[r*H*hd+h*hd : r*H*hd+(h+1)*hd] {
						s += float64(x) * float64(x)
					}
					hn[r*H+h] = float32(math.Sqrt(s))
				}
			}
			fold(heads[layer], hn, H)
		}
		return nil
	}
	// With Depth, the passes that remove layer l start from the stream
	// entering layer l, kept from the calibration pass over the same batch
	// (the layers before l give the same output with or without l), when
	// those streams fit snapshotBudget; otherwise every pass runs whole.
	// (The pass without layer 0 runs whole: it has nothing to skip.)
	var snaps map[int][]backend.Tensor // rows → stream entering each layer l ≥ 1
	if opt.Depth && int64(L-1)*int64(min(n, opt.BatchSize)*T)*int64(D)*4 <= snapshotBudget {
		snaps = map[int][]backend.Tensor{}
		defer func() {
			for _, ts := range snaps {
				for _, t := range ts {
					if t != nil {
						b.Free(t)
					}
				}
			}
		}()
	}
	// batch runs sequences s0..s0+bs (skip: the layer removed, or -1) and
	// returns the loss weighted by the number of sequences.
	batch := func(s0 int, skip int, observed bool) (float64, error) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		bs = min(opt.BatchSize, n-s0)
		a, err := workspace(bs * T)
		if err != nil {
			return 0, err
		}
		chunk := ids[s0*T : (s0+bs)*T]
		var mo model.Options
		if skip >= 0 {
			mo.Skip = make([]bool, L)
			mo.Skip[skip] = true
			if snaps != nil && skip > 0 {
				mo.From, mo.FromHidden = skip, snaps[bs*T][skip]
			}
		}
		snap = nil
		if observed {
			mo.Observer = obs
			blocks.begin(bs * T)
			if snaps != nil {
				if snap = snaps[bs*T]; snap == nil {
					snap = make([]backend.Tensor, L)
					snaps[bs*T] = snap
					for l := 1; l < L; l++ {
						if snap[l], err = b.New(b.FloatDType(), bs*T, D); err != nil {
							return 0, fmt.Errorf("importance: keeping the layer inputs of %d rows for the depth passes: %w", bs*T, err)
						}
					}
				}
			}
		}
		l, err := m.Loss(a, model.Input{B: bs, T: T, IDs: chunk}, model.NextTokenTargets(chunk, bs, T), mo)
		snap = nil
		if err != nil {
			return 0, err
		}
		if observed {
			blocks.end()
			tokens += bs * T
		}
		done++
		if opt.Progress != nil {
			opt.Progress(done, total)
		}
		return l * float64(bs), nil
	}
	var without []float64 // per layer, summed over the batches in order
	if opt.Depth {
		without = make([]float64, L)
	}
	for s0 := 0; s0 < n; s0 += opt.BatchSize {
		l, err := batch(s0, -1, true)
		if err != nil {
			return nil, err
		}
		lossSum += l
		if snaps == nil {
			continue
		}
		for k := range L {
			l, err := batch(s0, k, false)
			if err != nil {
				return nil, err
			}
			without[k] += l
		}
	}
	if opt.Depth && snaps == nil {
		for k := range L {
			for s0 := 0; s0 < n; s0 += opt.BatchSize {
				l, err := batch(s0, k, false)
				if err != nil {
					return nil, err
				}
				without[k] += l
			}
		}
	}
	lossSum /= float64(n)
	sc := &Scores{CalibrationLoss: float32(lossSum), LayerBI: make([]float32, L), Embedding: make([]float32, D), BlockBI: blocks.result()}
	for l := range L {
		sc.Head = append(sc.Head, heads[l].result())
		sc.Neuron = append(sc.Neuron, neurons[l].result())
		for k := range 2 {
			for j, v := range norms[2*l+k].result() {
				sc.Embedding[j] += v
			}
		}
		sc.LayerBI[l] = float32(1 - cosSum[l]/float64(tokens))
	}
	if opt.Depth {
		sc.LayerLossWithout = make([]float32, L)
		for l, v := range without {
			sc.LayerLossWithout[l] = float32(v / float64(n))
		}
	}
	sc.Meta = map[string]string{
		"aggregation":      opt.Agg.String(),
		"neuron_site":      opt.NeuronSite,
		"calibration_ids":  HashIDs(ids),
		"samples":          fmt.Sprint(n),
		"seq_len":          fmt.Sprint(T),
		"architecture":     c.Architecture,
		"shape":            fmt.Sprintf("layers=%d hidden=%d heads=%d kv_heads=%d head_dim=%d ffn=%d vocab=%d", L, D, H, c.NumKVHeads, hd, F, c.VocabSize),
		"calibration_loss": fmt.Sprint(sc.CalibrationLoss),
	}
	return sc, nil
}

// dot is Σ a·b in float64, four sums at once (independent additions
// pipeline; the cosines of block importance are most of its cost).
func dot(a, b []float32) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += float64(a[i]) * float64(b[i])
		s1 += float64(a[i+1]) * float64(b[i+1])
		s2 += float64(a[i+2]) * float64(b[i+2])
		s3 += float64(a[i+3]) * float64(b[i+3])
	}
	for ; i < len(a); i++ {
		s0 += float64(a[i]) * float64(b[i])
	}
	return (s0 + s1) + (s2 + s3)
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		x, y := float64(a[i]), float64(b[i])
		ab += x * y
		aa += x * x
		bb += y * y
	}
	if aa == 0 || bb == 0 {
		return 0
	}
	return ab / math.Sqrt(aa*bb)
}
