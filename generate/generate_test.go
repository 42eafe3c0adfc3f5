package generate

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/internal/fixture"
	"github.com/minitron/minitron/model"
)

const fixtures = "../testdata/hf"

func load(t *testing.T, name string) *model.Model {
	t.Helper()
	m, err := model.Load(filepath.Join(fixtures, name), cpu.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func ids64(t *testing.T, g *checkpoints.Tensors, name string) []int32 {
	t.Helper()
	ids, _ := fixture.IDs(t, g, name)
	return ids
}

// TestGreedyParity reproduces transformers' greedy decoding exactly.
func TestGreedyParity(t *testing.T) {
	for _, name := range []string{"nemotron-tiny", "nemotron-odd", "llama-tiny"} {
		t.Run(name, func(t *testing.T) {
			m := load(t, name)
			g, err := checkpoints.Open(filepath.Join(fixtures, name, "golden.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			prompt, want := ids64(t, g, "greedy_prompt"), ids64(t, g, "greedy_ids")
			var streamed []int32
			res, err := Generate(context.Background(), m, [][]int32{prompt}, Options{
				MaxNewTokens: len(want) - len(prompt),
				OnToken:      func(seq int, tok int32) error { streamed = append(streamed, tok); return nil },
			})
			if err != nil {
				t.Fatal(err)
			}
			got := append(append([]int32(nil), prompt...), res.Tokens[0]...)
			if !slices.Equal(got, want) {
				t.Fatalf("greedy ids\n got %v\nwant %v", got, want)
			}
			if !slices.Equal(streamed, res.Tokens[0]) || res.Finish[0] != FinishLength {
				t.Fatalf("streamed %v finish %v", streamed, res.Finish)
			}
		})
	}
}

// TestBatchIndependence: a prompt's continuation does not depend on the
// other prompts of its batch, greedy or sampled.
func TestBatchIndependence(t *testing.T) {
	m := load(t, "llama-tiny")
	prompts := [][]int32{{5, 9, 100, 3}, {7}, {1, 2, 3, 4, 5, 6, 7, 8, 9}}
	for _, opt := range []Options{
		{MaxNewTokens: 9},
		{MaxNewTokens: 9, Temperature: 0.8, TopK: 40, TopP: 0.9, Seed: 42},
	} {
		batch, err := Generate(context.Background(), m, prompts, opt)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range prompts {
			// Alone, the sequence is sequence 0; give it the same stream.
			s := NewSampler(opt, uint64(i))
			alone := greedyOrSample(t, m, p, opt, s)
			if !slices.Equal(alone, batch.Tokens[i]) {
				t.Fatalf("temperature %v prompt %d: batched %v, alone %v", opt.Temperature, i, batch.Tokens[i], alone)
			}
		}
		again, _ := Generate(context.Background(), m, prompts, opt)
		for i := range prompts {
			if !slices.Equal(again.Tokens[i], batch.Tokens[i]) {
				t.Fatal("same seed, different output")
			}
		}
	}
}

// greedyOrSample decodes one prompt with full forward passes (no cache).
func greedyOrSample(t *testing.T, m *model.Model, prompt []int32, opt Options, s *Sampler) []int32 {
	seq := append([]int32(nil), prompt...)
	V := m.Config.VocabSize
	var out []int32
	for range opt.MaxNewTokens {
		lg, err := Logits(m, 1, len(seq), seq)
		if err != nil {
			t.Fatal(err)
		}
		tok := s.Sample(lg[(len(seq)-1)*V:])
		out = append(out, tok)
		seq = append(seq, tok)
	}
	return out
}

func TestStopAndLength(t *testing.T) {
	m := load(t, "nemotron-tiny")
	prompt := []int32{1, 2, 3}
	free, err := Generate(context.Background(), m, [][]int32{prompt}, Options{MaxNewTokens: 6})
	if err != nil {
		t.Fatal(err)
	}
	stop := free.Tokens[0][3]
	res, err := Generate(context.Background(), m, [][]int32{prompt, prompt}, Options{MaxNewTokens: 6, Stop: []int32{stop}})
	if err != nil {
		t.Fatal(err)
	}
	for b := range 2 {
		first := slices.Index(free.Tokens[0], stop)
		if !slices.Equal(res.Tokens[b], free.Tokens[0][:first]) || res.Finish[b] != FinishStop {
			t.Fatalf("seq %d: %v (%s), want %v", b, res.Tokens[b], res.Finish[b], free.Tokens[0][:first])
		}
	}
	if _, err := Generate(context.Background(), m, [][]int32{{}}, Options{MaxNewTokens: 1}); err == nil {
		t.Fatal("empty prompt accepted")
	}
	if _, err := Generate(context.Background(), m, [][]int32{{600}}, Options{MaxNewTokens: 1}); err == nil {
		t.Fatal("out-of-vocabulary prompt accepted")
	}
	if _, err := Generate(context.Background(), m, [][]int32{{1}}, Options{TopP: 2}); err == nil {
		t.Fatal("top-p 2 accepted")
	}
}

func TestSamplerDistribution(t *testing.T) {
	logits := []float32{2, 1, 0, -1, 3, 0.5}
	softmax := func(temp float64, keep []int) []float64 {
		p := make([]float64, len(logits))
		var s float64
		for _, i := range keep {
			p[i] = math.Exp(float64(logits[i]) / temp)
			s += p[i]
		}
		for i := range p {
			p[i] /= s
		}
		return p
	}
	const n = 200000
	cases := []struct {
		opt  Options
		want []float64
	}{
		{Options{Temperature: 1}, softmax(1, []int{0, 1, 2, 3, 4, 5})},
		{Options{Temperature: 0.5}, softmax(0.5, []int{0, 1, 2, 3, 4, 5})},
		{Options{Temperature: 1, TopK: 2}, softmax(1, []int{4, 0})},
		// Probabilities at T=1, sorted: logit 3 (.605), 2 (.222), 1 (.082), 0.5 (.050), ...
		// Cumulative .605, .827, .909: top-p 0.8 keeps two tokens, 0.85 three.
		{Options{Temperature: 1, TopP: 0.8}, softmax(1, []int{4, 0})},
		{Options{Temperature: 1, TopP: 0.85}, softmax(1, []int{4, 0, 1})},
	}
	for _, c := range cases {
		s := NewSampler(c.opt, 0)
		counts := make([]float64, len(logits))
		for range n {
			counts[s.Sample(logits)]++
		}
		for i, w := range c.want {
			got := counts[i] / n
			// Binomial standard deviation at n=200000 is at most 0.0011.
			if math.Abs(got-w) > 0.006 {
				t.Errorf("%+v: token %d frequency %.4f, want %.4f", c.opt, i, got, w)
			}
		}
	}
	if tok := NewSampler(Options{Temperature: 0}, 0).Sample([]float32{1, 5, 5, 2}); tok != 1 {
		t.Fatalf("greedy tie: %d", tok)
	}
	if tok := NewSampler(Options{Temperature: 3, TopK: 1}, 0).Sample(logits); tok != 4 {
		t.Fatalf("top-k 1: %d", tok)
	}
}
