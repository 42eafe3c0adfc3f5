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
	"github.com/minitron/minitron/diskio"
	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/importance"
	"github.com/minitron/minitron/model"
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
	// Distill is the short distillation each candidate gets: data, sequence
	// length, batch, optimizer, steps and validation batches. Its model
	// and teacher are filled in.
	Distill distill.Config
	Backend backend.Backend
	Log     io.Writer
	// Interrupt, when closed, stops the candidate in training after its
	// current step with a checkpoint; rerunning resumes it.
	Interrupt <-chan struct{}
}

// ResultsFile records the candidates scored so far in ScoreOptions.Out.
const ResultsFile = "search-results.json"

// Scored is a candidate and its validation loss after the short distillation.
type Scored struct {
	Candidate
	ValLoss float64 `json:"val_loss"`
	Dir     string  `json:"dir"`
}

// Name is the candidate's directory name.
func (c Candidate) Name() string {
	return fmt.Sprintf("L%d-D%d-H%d-F%d", c.Layers, c.Hidden, c.Heads, c.FFN)
}

// ScoreCandidates prunes each candidate, distills it briefly against the
// source and ranks the candidates by validation loss, lowest first (the
// paper's lightweight retraining before choosing an architecture). Every
// finished candidate is recorded at once, so a rerun after an interruption
// skips it; an interrupted distillation resumes from its checkpoint.
func ScoreCandidates(ctx context.Context, cs []Candidate, opt ScoreOptions) ([]Scored, error) {
	if opt.Distill.Train.Steps <= 0 || opt.Distill.Eval.Batches <= 0 {
		return nil, fmt.Errorf("prune: scoring needs a number of distillation steps and validation batches (--score-steps, --eval-batches)")
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
		cfg := opt.Distill
		cfg.Model = train.ModelConfig{Checkpoint: mdir, Tokenizer: opt.Distill.Model.Tokenizer}
		cfg.Teacher = distill.Teacher{Model: opt.Source}
		cfg.Eval.Every = 0 // once, at the end
		logf("candidate %d/%d %s: distilling %d steps", i+1, len(cs), c.Name(), cfg.Train.Steps)
		res, _, err := distill.Run(ctx, &cfg, train.RunOptions{Out: filepath.Join(dir, "run"), Backend: opt.Backend, Interrupt: opt.Interrupt})
		if err != nil {
			if errors.Is(err, train.ErrInterrupted) {
				return nil, fmt.Errorf("prune: candidate %s interrupted; rerun the same command to resume: %w", c.Name(), err)
			}
			return nil, fmt.Errorf("prune: candidate %s: %w", c.Name(), err)
		}
		if math.IsNaN(res.ValLoss) {
			return nil, fmt.Errorf("prune: candidate %s: no validation loss (is the validation split empty?)", c.Name())
		}
		done[c.Name()] = Scored{Candidate: c, ValLoss: res.ValLoss, Dir: dir}
		logf("candidate %d/%d %s: validation loss %.4f", i+1, len(cs), c.Name(), res.ValLoss)
		if err := writeResults(filepath.Join(opt.Out, ResultsFile), done); err != nil {
			return nil, err
		}
	}
	out := make([]Scored, 0, len(cs))
	for _, c := range cs {
		out = append(out, done[c.Name()])
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].ValLoss < out[b].ValLoss })
	return out, nil
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
	var list []Scored
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("prune: %s: %w; delete it to score every candidate again", path, err)
	}
	for _, s := range list {
		done[s.Name()] = s
	}
	return done, nil
}

func writeResults(path string, done map[string]Scored) error {
	list := make([]Scored, 0, len(done))
	for _, s := range done {
		list = append(list, s)
	}
	sort.Slice(list, func(a, b int) bool { return list[a].ValLoss < list[b].ValLoss })
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	return diskio.WriteFileAtomic(path, append(b, '\n'))
}
