// Package generate decodes text from a model: batched prompts of different
// lengths share one KV cache, and each step samples every sequence's next
// token (greedy, temperature, top-k, top-p) from its own seeded generator, so
// a sequence's output does not depend on what it is batched with.
package generate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/minitron/minitron/model"
)

// Options control decoding.
type Options struct {
	MaxNewTokens int
	// Temperature 0 decodes greedily.
	Temperature float64
	TopK        int     // keep the K most likely tokens; 0 keeps all
	TopP        float64 // keep the smallest set with this much probability; 0 or 1 keeps all
	Seed        uint64
	// Stop ends a sequence when it generates one of these tokens (which is
	// not included in the output).
	Stop []int32
	// OnToken, if set, receives each sequence's tokens as they are produced.
	OnToken func(seq int, token int32) error
}

// Finish reasons.
const (
	FinishStop   = "stop"
	FinishLength = "length"
)

// Result is what Generate produced.
type Result struct {
	Tokens       [][]int32 // new tokens of each sequence
	Finish       []string  // FinishStop or FinishLength
	PromptTokens int
	NewTokens    int
	Prefill      time.Duration
	Decode       time.Duration
}

// Validate checks the options.
func (o Options) Validate() error {
	switch {
	case o.MaxNewTokens < 0:
		return fmt.Errorf("generate: max new tokens %d is negative", o.MaxNewTokens)
	case o.Temperature < 0 || math.IsNaN(o.Temperature):
		return fmt.Errorf("generate: temperature %v must be >= 0 (0 is greedy)", o.Temperature)
	case o.TopK < 0:
		return fmt.Errorf("generate: top-k %d must be >= 0 (0 disables it)", o.TopK)
	case o.TopP < 0 || o.TopP > 1:
		return fmt.Errorf("generate: top-p %v must be in [0, 1] (0 or 1 disables it)", o.TopP)
	}
	return nil
}

// Generate continues each prompt.
func Generate(ctx context.Context, m *model.Model, prompts [][]int32, opt Options) (*Result, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	if len(prompts) == 0 {
		return nil, errors.New("generate: no prompts")
	}
	B := len(prompts)
	maxPrompt := 0
	res := &Result{Tokens: make([][]int32, B), Finish: make([]string, B)}
	for i, p := range prompts {
		if len(p) == 0 {
			return nil, fmt.Errorf("generate: prompt %d is empty; give at least one token (a BOS token, for instance)", i)
		}
		for _, id := range p {
			if id < 0 || int(id) >= m.Config.VocabSize {
				return nil, fmt.Errorf("generate: prompt %d: token id %d is outside the vocabulary (size %d)", i, id, m.Config.VocabSize)
			}
		}
		maxPrompt = max(maxPrompt, len(p))
		res.PromptTokens += len(p)
	}
	cache, err := m.NewCache(B, maxPrompt+opt.MaxNewTokens)
	if err != nil {
		return nil, err
	}
	defer cache.Free(m.Backend)

	// Prefill: prompts right-padded to one length. Padding only writes cache
	// rows past a sequence's end, which its own later tokens overwrite, and
	// causal attention never looks at them from real positions.
	start := time.Now()
	T := maxPrompt
	ids := make([]int32, B*T)
	last := make([]int32, B)
	for b, p := range prompts {
		copy(ids[b*T:], p)
		last[b] = int32(b*T + len(p) - 1)
	}
	pre, err := m.NewActivations(B*T, false)
	if err != nil {
		return nil, err
	}
	logits, err := m.Forward(pre, model.Input{B: B, T: T, IDs: ids, Past: make([]int, B), LogitRows: last}, model.Options{Cache: cache})
	if err != nil {
		pre.Free(m.Backend)
		return nil, err
	}
	lv, err := m.Backend.ToFloat32(logits)
	pre.Free(m.Backend)
	if err != nil {
		return nil, err
	}
	res.Prefill = time.Since(start)
	start = time.Now()

	samplers := make([]*Sampler, B)
	for b := range samplers {
		samplers[b] = NewSampler(opt, uint64(b))
	}
	length := make([]int, B)
	for b, p := range prompts {
		length[b] = len(p)
	}
	active := B
	done := make([]bool, B)
	V := m.Config.VocabSize
	var dec *model.Activations
	defer func() {
		if dec != nil {
			dec.Free(m.Backend)
		}
	}()
	next := make([]int32, B)
	if opt.MaxNewTokens == 0 {
		for b := range B {
			done[b], res.Finish[b] = true, FinishLength
		}
		active = 0
	}
	for active > 0 {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		for b := range B {
			if done[b] {
				continue
			}
			tok := samplers[b].Sample(lv[b*V : (b+1)*V])
			if slices.Contains(opt.Stop, tok) {
				done[b], res.Finish[b] = true, FinishStop
				active--
				continue
			}
			res.Tokens[b] = append(res.Tokens[b], tok)
			res.NewTokens++
			next[b] = tok
			if opt.OnToken != nil {
				if err := opt.OnToken(b, tok); err != nil {
					return res, err
				}
			}
			if len(res.Tokens[b]) >= opt.MaxNewTokens {
				done[b], res.Finish[b] = true, FinishLength
				active--
			}
		}
		if active == 0 {
			break
		}
		// Decode one position for every sequence; finished ones compute on
		// a dummy token and are ignored.
		if dec == nil {
			if dec, err = m.NewActivations(B, false); err != nil {
				return res, err
			}
		}
		past := make([]int, B)
		for b := range B {
			past[b] = length[b]
			if done[b] {
				next[b] = 0
				past[b] = min(length[b], cache.MaxT-1)
			}
		}
		logits, err := m.Forward(dec, model.Input{B: B, T: 1, IDs: next, Past: past}, model.Options{Cache: cache})
		if err != nil {
			return res, err
		}
		if lv, err = m.Backend.ToFloat32(logits); err != nil {
			return res, err
		}
		for b := range B {
			if !done[b] {
				length[b]++
			}
		}
	}
	res.Decode = time.Since(start)
	return res, nil
}

// Sampler picks tokens from logits for one sequence.
type Sampler struct {
	opt  Options
	rng  *rand.Rand
	cand []cand
}

type cand struct {
	id int32
	p  float64
}

// NewSampler returns a sampler whose random stream depends only on the seed
// and the sequence number.
func NewSampler(opt Options, seq uint64) *Sampler {
	return &Sampler{opt: opt, rng: rand.New(rand.NewPCG(opt.Seed, seq^0x9e3779b97f4a7c15))}
}

// better orders candidates by score, then by id, so ties are deterministic.
func better(a, b cand) bool { return a.p > b.p || a.p == b.p && a.id < b.id }

// Sample returns the next token. Greedy ties go to the lowest id.
func (s *Sampler) Sample(logits []float32) int32 {
	if s.opt.Temperature == 0 {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return int32(best)
	}
	cs := s.cand[:0]
	if k := s.opt.TopK; k > 0 && k < len(logits) {
		cs = topK(cs, logits, k)
	} else {
		for i, v := range logits {
			cs = append(cs, cand{int32(i), float64(v)})
		}
	}
	s.cand = cs
	// Softmax at the temperature over the candidates.
	mx := math.Inf(-1)
	for _, c := range cs {
		mx = math.Max(mx, c.p)
	}
	var sum float64
	for i := range cs {
		cs[i].p = math.Exp((cs[i].p - mx) / s.opt.Temperature)
		sum += cs[i].p
	}
	if p := s.opt.TopP; p > 0 && p < 1 {
		// The nucleus is the most likely prefix holding mass p. Tokens below
		// (1-p)/n hold less than 1-p together, so the prefix reaches p
		// before them: drop them before sorting.
		floor := (1 - p) / float64(len(cs)) * sum
		kept := cs[:0]
		for _, c := range cs {
			if c.p >= floor {
				kept = append(kept, c)
			}
		}
		slices.SortFunc(kept, func(a, b cand) int {
			if better(a, b) {
				return -1
			}
			if better(b, a) {
				return 1
			}
			return 0
		})
		var cum float64
		for i, c := range kept {
			cum += c.p
			if cum >= p*sum {
				kept = kept[:i+1]
				break
			}
		}
		cs, sum = kept, 0
		for _, c := range cs {
			sum += c.p
		}
	}
	r := s.rng.Float64() * sum
	for _, c := range cs {
		r -= c.p
		if r < 0 {
			return c.id
		}
	}
	return cs[len(cs)-1].id
}

// topK appends the k highest logits to dst using a bounded min-heap.
func topK(dst []cand, logits []float32, k int) []cand {
	h := dst[:0]
	worse := func(i, j int) bool { return better(h[j], h[i]) } // min-heap on "better"
	down := func(i int) {
		for {
			l := 2*i + 1
			if l >= len(h) {
				return
			}
			m := l
			if r := l + 1; r < len(h) && worse(r, l) {
				m = r
			}
			if !worse(m, i) {
				return
			}
			h[i], h[m] = h[m], h[i]
			i = m
		}
	}
	for i, v := range logits {
		c := cand{int32(i), float64(v)}
		if len(h) < k {
			h = append(h, c)
			for j := len(h) - 1; j > 0; {
				p := (j - 1) / 2
				if !worse(j, p) {
					break
				}
				h[j], h[p] = h[p], h[j]
				j = p
			}
			continue
		}
		if better(c, h[0]) {
			h[0] = c
			down(0)
		}
	}
	return h
}

// Logits returns the full-sequence logits of ids (b sequences of t tokens),
// for tools and tests that compare them.
func Logits(m *model.Model, b, t int, ids []int32) ([]float32, error) {
	a, err := m.NewActivations(b*t, false)
	if err != nil {
		return nil, err
	}
	defer a.Free(m.Backend)
	out, err := m.Forward(a, model.Input{B: b, T: t, IDs: ids}, model.Options{})
	if err != nil {
		return nil, err
	}
	return m.Backend.ToFloat32(out)
}
