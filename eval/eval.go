// Package eval measures models: perplexity on held-out data, and the
// benchmarks the Minitron papers report (MMLU, HellaSwag, Winogrande, ARC,
// HumanEval) built and scored as lm-evaluation-harness v0.4.8 does it,
// from the data files the Hugging Face hub publishes.
package eval

import (
	"context"
	"fmt"
	"math"

	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/model"
)

// Result is a model's loss on a set of sequences.
type Result struct {
	Loss       float64 // mean next-token cross-entropy, nats per token
	Perplexity float64
	Tokens     int64
}

// Perplexity evaluates m on up to maxSeqs sequences of a split (0: all of
// it), micro sequences per forward pass. Fewer than all are taken evenly
// spaced through the split, not from its start: a split is made of blocks
// of consecutive sequences, and the first few blocks may all come from one
// unrepresentative file.
func Perplexity(ctx context.Context, m *model.Model, s data.Split, maxSeqs, micro int) (*Result, error) {
	n := s.Count
	if maxSeqs > 0 {
		n = min(n, int64(maxSeqs))
	}
	return perplexity(ctx, m, s.SeqLen, n, micro, func(i int64) ([]int32, error) { return s.Read(nil, i*s.Count/n) })
}

// PerplexityOn evaluates m on the given sequences of T+1 tokens each (the
// inputs and, one further, the targets), micro per forward pass: the
// held-out batches a training run validates on (train.ValidationSequences),
// so the figures compare with its val_ce.
func PerplexityOn(ctx context.Context, m *model.Model, seqs [][]int32, micro int) (*Result, error) {
	if len(seqs) == 0 {
		return nil, fmt.Errorf("eval: no sequences to evaluate")
	}
	T := len(seqs[0]) - 1
	for i, s := range seqs {
		if len(s) != T+1 {
			return nil, fmt.Errorf("eval: sequence %d has %d tokens, sequence 0 %d", i, len(s), T+1)
		}
	}
	return perplexity(ctx, m, T, int64(len(seqs)), micro, func(i int64) ([]int32, error) { return seqs[i], nil })
}

// perplexity evaluates m on n sequences of T+1 tokens, sequence i read by
// read(i).
func perplexity(ctx context.Context, m *model.Model, T int, n int64, micro int, read func(i int64) ([]int32, error)) (*Result, error) {
	if n == 0 || T < 1 {
		return nil, fmt.Errorf("eval: no sequences to evaluate")
	}
	micro = max(1, micro)
	a, err := m.NewActivations(micro*T, false)
	if err != nil {
		return nil, err
	}
	defer func() {
		if a != nil { // nil after a failed reallocation
			a.Free(m.Backend)
		}
	}()
	var sum float64
	var tokens int64
	for i := int64(0); i < n; i += int64(micro) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b := int(min(int64(micro), n-i))
		if b != micro {
			a.Free(m.Backend)
			if a, err = m.NewActivations(b*T, false); err != nil {
				return nil, err
			}
		}
		ids := make([]int32, 0, b*T)
		targets := make([]int32, 0, b*T)
		for j := range b {
			seq, err := read(i + int64(j))
			if err != nil {
				return nil, err
			}
			ids = append(ids, seq[:T]...)
			targets = append(targets, seq[1:]...)
		}
		for _, id := range append(ids[:len(ids):len(ids)], targets...) {
			if int(id) >= m.Config.VocabSize {
				return nil, fmt.Errorf("eval: token %d is outside the model's vocabulary of %d; the data was tokenized for another model", id, m.Config.VocabSize)
			}
		}
		l, err := m.Loss(a, model.Input{B: b, T: T, IDs: ids}, targets, model.Options{})
		if err != nil {
			return nil, err
		}
		sum += l * float64(b*T)
		tokens += int64(b * T)
	}
	loss := sum / float64(tokens)
	return &Result{Loss: loss, Perplexity: math.Exp(loss), Tokens: tokens}, nil
}
