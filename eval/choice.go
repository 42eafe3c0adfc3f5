package eval

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

// Item is one multiple-choice question: the context, the candidate
// continuations, and the index of the right one.
type Item struct {
	Context string
	Choices []string
	Label   int
}

// ReadItems reads a JSON lines file of multiple-choice items. Each line
// is one of
//
//	{"context": "...", "choices": ["...", ...], "label": 0}
//	{"ctx": "...", "endings": ["...", ...], "label": 0}          (HellaSwag)
//	{"question": "...", "choices": ["...", ...], "answer": 0}    (MMLU-style)
//
// A question is asked as "Question: ...\nAnswer:" with each choice as a
// continuation. Labels may be numbers or digit strings.
func ReadItems(r io.Reader, name string) ([]Item, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var items []Item
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var raw struct {
			Context  *string         `json:"context"`
			Ctx      *string         `json:"ctx"`
			Question *string         `json:"question"`
			Choices  []string        `json:"choices"`
			Endings  []string        `json:"endings"`
			Label    json.RawMessage `json:"label"`
			Answer   json.RawMessage `json:"answer"`
		}
		if err := json.Unmarshal([]byte(text), &raw); err != nil {
			return nil, fmt.Errorf("eval: %s:%d: %w", name, line, err)
		}
		var it Item
		label := raw.Label
		switch {
		case raw.Context != nil:
			it.Context, it.Choices = *raw.Context, raw.Choices
		case raw.Ctx != nil:
			it.Context, it.Choices = *raw.Ctx, raw.Endings
		case raw.Question != nil:
			it.Context, it.Choices, label = "Question: "+*raw.Question+"\nAnswer:", raw.Choices, raw.Answer
		default:
			return nil, fmt.Errorf("eval: %s:%d: no context, ctx or question field", name, line)
		}
		if len(it.Choices) < 2 {
			return nil, fmt.Errorf("eval: %s:%d: %d choices; a multiple-choice item needs at least 2", name, line, len(it.Choices))
		}
		var n int
		if err := json.Unmarshal(label, &n); err != nil {
			var s string
			if json.Unmarshal(label, &s) != nil || func() error { _, e := fmt.Sscanf(s, "%d", &n); return e }() != nil {
				return nil, fmt.Errorf("eval: %s:%d: the label must be a choice index (got %s)", name, line, string(label))
			}
		}
		if n < 0 || n >= len(it.Choices) {
			return nil, fmt.Errorf("eval: %s:%d: label %d outside the %d choices", name, line, n, len(it.Choices))
		}
		it.Label = n
		items = append(items, it)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("eval: %s: %w", name, err)
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("eval: %s holds no items", name)
	}
	return items, nil
}

// ReadItemsFile reads items from a file (see ReadItems).
func ReadItemsFile(path string) ([]Item, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	defer f.Close()
	return ReadItems(f, path)
}

// Encoder is what multiple-choice scoring needs of a tokenizer.
type Encoder interface {
	Encode(text string) []int32
	BOS() int32
}

// ChoiceResult is the accuracy of a model on multiple-choice items, as
// lm-evaluation-harness reports it: acc picks the choice with the highest
// log-likelihood, acc_norm the highest log-likelihood per byte.
type ChoiceResult struct {
	Items   int
	Acc     float64
	AccNorm float64
	// LogLik holds, per item, each choice's summed log-likelihood.
	LogLik [][]float64
}

// MultipleChoice scores every choice of every item by the log-likelihood
// the model gives its tokens after the context: the context is encoded
// (after BOS when the tokenizer has one) and each choice separately with a
// space before it (unless the context ends in whitespace), as
// lm-evaluation-harness does; only the logits of the choice positions are
// computed. maxLen truncates contexts from the left.
func MultipleChoice(ctx context.Context, m *model.Model, tok Encoder, items []Item, maxLen int, progress func(done, total int)) (*ChoiceResult, error) {
	res := &ChoiceResult{Items: len(items)}
	var correct, correctNorm int
	for i, it := range items {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ll, err := choiceLogLik(m, tok, it, maxLen)
		if err != nil {
			return nil, fmt.Errorf("eval: item %d: %w", i+1, err)
		}
		res.LogLik = append(res.LogLik, ll)
		best, bestNorm := 0, 0
		for c := range ll {
			if ll[c] > ll[best] {
				best = c
			}
			if ll[c]/float64(len(it.Choices[c])) > ll[bestNorm]/float64(len(it.Choices[bestNorm])) {
				bestNorm = c
			}
		}
		if best == it.Label {
			correct++
		}
		if bestNorm == it.Label {
			correctNorm++
		}
		if progress != nil {
			progress(i+1, len(items))
		}
	}
	res.Acc = float64(correct) / float64(len(items))
	res.AccNorm = float64(correctNorm) / float64(len(items))
	return res, nil
}

// choiceLogLik runs the item's choices as one batch, right-padded to the
// longest (causal attention keeps padding out of earlier positions).
func choiceLogLik(m *model.Model, tok Encoder, it Item, maxLen int) ([]float64, error) {
	prefix := tokenizer.EncodePrompt(tok, it.Context)
	delim := " "
	if it.Context == "" || strings.ContainsAny(it.Context[len(it.Context)-1:], " \t\n") {
		delim = ""
	}
	seqs := make([][]int32, len(it.Choices))
	starts := make([]int, len(it.Choices))
	T := 0
	for c, choice := range it.Choices {
		cont := tok.Encode(delim + choice)
		if len(cont) == 0 {
			return nil, fmt.Errorf("choice %d encodes to no tokens", c+1)
		}
		p := prefix
		if maxLen > 0 && len(p)+len(cont) > maxLen {
			cut := len(p) + len(cont) - maxLen
			if cut >= len(p) {
				return nil, fmt.Errorf("choice %d alone is longer than %d tokens", c+1, maxLen)
			}
			p = p[cut:]
		}
		if len(p) == 0 {
			return nil, fmt.Errorf("an empty context needs a tokenizer with BOS")
		}
		seqs[c] = append(append([]int32(nil), p...), cont...)
		starts[c] = len(p)
		T = max(T, len(seqs[c]))
	}
	B := len(seqs)
	ids := make([]int32, B*T)
	var rows []int32
	for b, s := range seqs {
		copy(ids[b*T:], s)
		for pos := starts[b]; pos < len(s); pos++ {
			rows = append(rows, int32(b*T+pos-1)) // the logits that predict s[pos]
		}
	}
	for _, id := range ids {
		if int(id) >= m.Config.VocabSize {
			return nil, fmt.Errorf("token %d is outside the model's vocabulary of %d; use the model's own tokenizer", id, m.Config.VocabSize)
		}
	}
	a, err := m.NewActivations(B*T, false)
	if err != nil {
		return nil, err
	}
	defer a.Free(m.Backend)
	logits, err := m.Forward(a, model.Input{B: B, T: T, IDs: ids, LogitRows: rows}, model.Options{})
	if err != nil {
		return nil, err
	}
	lv, err := m.Backend.ToFloat32(logits)
	if err != nil {
		return nil, err
	}
	V := backend.Cols(logits)
	out := make([]float64, B)
	r := 0
	for b, s := range seqs {
		for pos := starts[b]; pos < len(s); pos++ {
			out[b] += logSoftmaxAt(lv[r*V:(r+1)*V], s[pos])
			r++
		}
	}
	return out, nil
}

// logSoftmaxAt returns log softmax(row)[k] in float64.
func logSoftmaxAt(row []float32, k int32) float64 {
	mx := math.Inf(-1)
	for _, x := range row {
		mx = math.Max(mx, float64(x))
	}
	var s float64
	for _, x := range row {
		s += math.Exp(float64(x) - mx)
	}
	return float64(row[k]) - mx - math.Log(s)
}
