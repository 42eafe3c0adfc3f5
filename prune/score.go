package prune

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/diskio"
	"github.com/minitron/minitron/eval"
	"github.com/minitron/minitron/importance"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
	"github.com/minitron/minitron/train"
)

// ScoreOptions configure ScoreCandidates.
type ScoreOptions struct {
	Source     string // the teacher's directory
	Scores     *importance.Scores
	ScoresPath string
	// Out holds one directory per candidate (the pruned model and its short
	// distillation run) and ResultsFile.
	Out string
	// Retrain is the short retraining each candidate gets (the paper's
	// lightweight distillation; distill.Retrainer): it trains the model in
	// modelDir, keeps its run in runDir (so an interrupted one resumes
	// there on a rerun; the trained model in runDir/final) and returns the
	// validation cross-entropy. Nil scores the pruned models as they are
	// (Metric is then required).
	Retrain func(ctx context.Context, modelDir, runDir string) (float64, error)
	// Metric scores each candidate after its retraining; nil ranks by the
	// retraining's validation cross-entropy.
	Metric  *Metric
	Backend backend.Backend
	Log     io.Writer
}

// ResultsFile records the candidates scored so far in ScoreOptions.Out.
const ResultsFile = "search-results.json"

// Scored is a candidate and its score after the short distillation.
type Scored struct {
	Candidate
	// ValLoss is the retraining's final validation cross-entropy (nil
	// without retraining).
	ValLoss *float64 `json:"val_ce,omitempty"`
	// Score is the metric's value; the ranking's order.
	Score  float64 `json:"score"`
	Metric string  `json:"metric"`
	Dir    string  `json:"dir"`
}

// Name is the candidate's directory name.
func (c Candidate) Name() string {
	n := fmt.Sprintf("L%d-D%d-H%d-F%d", c.Layers, c.Hidden, c.Heads, c.FFN)
	if len(c.Drop) > 0 {
		n += fmt.Sprintf("-drop%d-%d", c.Drop[0], c.Drop[len(c.Drop)-1])
	}
	return n
}

// Metric scores a candidate model (a Hugging Face directory).
type Metric struct {
	Name   string // e.g. "val_loss"
	Higher bool   // higher scores are better
	Score  func(ctx context.Context, dir string, b backend.Backend) (float64, error)
}

// ValLoss is the mean next-token cross-entropy on up to sequences
// sequences (0: all) of the validation split of a prepared dataset.
func ValLoss(dataset string, seqLen int, valFraction float64, sequences int) *Metric {
	return &Metric{Name: "val_ce", Score: func(ctx context.Context, dir string, b backend.Backend) (float64, error) {
		ds, err := data.Open(dataset)
		if err != nil {
			return 0, err
		}
		defer ds.Close()
		_, val, err := ds.Split(seqLen, valFraction)
		if err != nil {
			return 0, err
		}
		return withModel(dir, b, func(m *model.Model) (float64, error) {
			res, err := eval.Perplexity(ctx, m, val, sequences, max(1, 2048/seqLen))
			if err != nil {
				return 0, err
			}
			return res.Loss, nil
		})
	}}
}

// withModel loads the model in dir for f.
func withModel(dir string, b backend.Backend, f func(*model.Model) (float64, error)) (float64, error) {
	m, err := model.Load(dir, b, nil)
	if err != nil {
		return 0, err
	}
	defer m.Free()
	return f(m)
}

// Task is the accuracy on a benchmark as the eval package scores it: one
// of eval.Tasks (such as winogrande, the score 2408.11796 §2 ranks blocks
// of layers by) with its data at path, or, with name "", a generic
// multiple-choice JSON lines file; shots -1 takes the task's own setting,
// limit > 0 its first documents. The metric is acc_norm where the task
// reports it, acc otherwise. tok is the tokenizer (a model directory or
// file).
func Task(name, path, tok string, shots, limit int) *Metric {
	return &Metric{Name: "acc " + eval.TaskLabel(name, path), Higher: true, Score: func(ctx context.Context, dir string, b backend.Backend) (float64, error) {
		tk, err := tokenizer.Open(tok)
		if err != nil {
			return 0, err
		}
		return withModel(dir, b, func(m *model.Model) (float64, error) {
			res, err := eval.Run(ctx, m, tk, name, path, eval.Options{Shots: shots, Limit: limit, Score: eval.ScoreOptions{MaxLen: m.Config.MaxPositions}})
			if err != nil {
				return 0, err
			}
			if res.AccNorm != nil {
				return res.AccNorm.Value, nil
			}
			return res.Acc.Value, nil
		})
	}}
}

// ScoreCandidates prunes each candidate, distills it briefly against the
// source and ranks the candidates by the metric (default: the
// distillation's validation loss), best first: the paper's lightweight
// retraining before choosing an architecture (arXiv:2407.14679), or the
// choice of a contiguous block of layers to drop by a downstream score
// (arXiv:2408.11796 §2 ranks blocks by Winogrande accuracy). Every
// finished candidate is recorded at once, so a rerun after an interruption
// skips it; an interrupted distillation resumes from its checkpoint.
func ScoreCandidates(ctx context.Context, cs []Candidate, opt ScoreOptions) ([]Scored, error) {
	if opt.Retrain == nil && opt.Metric == nil {
		return nil, fmt.Errorf("prune: scoring needs a retraining (--score-steps) or a metric of the pruned models (--metric)")
	}
	metric := "val_ce"
	if opt.Metric != nil {
		metric = opt.Metric.Name
	}
	src, err := model.LoadConfig(filepath.Join(opt.Source, "config.json"))
	if err != nil {
		return nil, err
	}
	// Plan every candidate first: a shape that cannot be pruned fails
	// before any training.
	plans := make([]*Plan, len(cs))
	for i, c := range cs {
		t := Targets{Hidden: c.Hidden, Heads: c.Heads, FFN: c.FFN, Layers: c.Layers}
		if len(c.Drop) > 0 {
			t.Layers, t.DropLayers = 0, c.Drop
		}
		if plans[i], err = NewPlan(src, opt.Scores, t); err != nil {
			return nil, fmt.Errorf("prune: candidate %v: %w", c, err)
		}
	}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, err
	}
	done, err := readResults(filepath.Join(opt.Out, ResultsFile))
	if err != nil {
		return nil, err
	}
	logf := func(format string, a ...any) {
		if opt.Log != nil {
			fmt.Fprintf(opt.Log, format+"\n", a...)
		}
	}
	for i, c := range cs {
		if _, ok := done[c.Name()]; ok {
			logf("candidate %d/%d %s: scored before (%s)", i+1, len(cs), c.Name(), filepath.Join(opt.Out, ResultsFile))
			continue
		}
		dir := filepath.Join(opt.Out, c.Name())
		mdir := filepath.Join(dir, "model")
		if _, err := os.Stat(filepath.Join(mdir, ReportFile)); err != nil {
			logf("candidate %d/%d %s: pruning to %v", i+1, len(cs), c.Name(), c)
			if _, err := Apply(ctx, plans[i], opt.Source, ApplyOptions{Out: mdir, ScoresPath: opt.ScoresPath, ScoresMeta: opt.Scores.Meta}); err != nil {
				return nil, err
			}
		}
		sc := Scored{Candidate: c, Score: math.NaN(), Metric: metric, Dir: dir}
		scored := mdir
		if opt.Retrain != nil {
			logf("candidate %d/%d %s: retraining", i+1, len(cs), c.Name())
			run := filepath.Join(dir, "run")
			loss, err := opt.Retrain(ctx, mdir, run)
			if err != nil {
				return nil, fmt.Errorf("prune: candidate %s: %w", c.Name(), err)
			}
			sc.ValLoss, sc.Score, scored = &loss, loss, filepath.Join(run, train.FinalDir)
		}
		if opt.Metric != nil {
			v, err := opt.Metric.Score(ctx, scored, opt.Backend)
			if err != nil {
				return nil, fmt.Errorf("prune: candidate %s: %s: %w", c.Name(), metric, err)
			}
			sc.Score = v
		}
		if math.IsNaN(sc.Score) {
			return nil, fmt.Errorf("prune: candidate %s: no validation cross-entropy (is the validation split empty?)", c.Name())
		}
		done[c.Name()] = sc
		logf("candidate %d/%d %s: %s %.4f", i+1, len(cs), c.Name(), metric, sc.Score)
		if err := writeResults(filepath.Join(opt.Out, ResultsFile), done, opt.Metric); err != nil {
			return nil, err
		}
	}
	out := make([]Scored, 0, len(cs))
	for _, c := range cs {
		out = append(out, done[c.Name()])
	}
	sortScored(out, opt.Metric)
	return out, nil
}

// sortScored orders candidates best first.
func sortScored(s []Scored, m *Metric) {
	higher := m != nil && m.Higher
	sort.SliceStable(s, func(a, b int) bool {
		if higher {
			return s[a].Score > s[b].Score
		}
		return s[a].Score < s[b].Score
	})
}

func readResults(path string) (map[string]Scored, error) {
	done := map[string]Scored{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return done, nil
	}
	if err != nil {
		return nil, err
	}
	var list []struct {
		Scored
		Old *float64 `json:"val_loss"` // the name of val_ce in searches made before it
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("prune: %s: %w; delete it to score every candidate again", path, err)
	}
	for _, s := range list {
		if s.ValLoss == nil && s.Old != nil {
			s.ValLoss = s.Old
		}
		switch {
		case s.Metric == "" && s.ValLoss != nil: // ranked by it, before metrics
			s.Score, s.Metric = *s.ValLoss, "val_ce"
		case s.Metric == "val_loss":
			s.Metric = "val_ce"
		}
		done[s.Name()] = s.Scored
	}
	return done, nil
}

func writeResults(path string, done map[string]Scored, m *Metric) error {
	list := make([]Scored, 0, len(done))
	for _, s := range done {
		list = append(list, s)
	}
	sort.Slice(list, func(a, b int) bool { return list[a].Name() < list[b].Name() })
	sortScored(list, m)
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	return diskio.WriteFileAtomic(path, append(b, '\n'))
}
