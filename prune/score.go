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

	"github.com/minitron/minitron/diskio"
	"github.com/minitron/minitron/importance"
	"github.com/minitron/minitron/model"
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
	// there on a rerun) and returns the validation cross-entropy.
	Retrain func(ctx context.Context, modelDir, runDir string) (float64, error)
	Log     io.Writer
}

// ResultsFile records the candidates scored so far in ScoreOptions.Out.
const ResultsFile = "search-results.json"

// Scored is a candidate and its validation cross-entropy after the short
// distillation.
type Scored struct {
	Candidate
	ValLoss float64 `json:"val_ce"`
	Dir     string  `json:"dir"`
}

// Name is the candidate's directory name.
func (c Candidate) Name() string {
	return fmt.Sprintf("L%d-D%d-H%d-F%d", c.Layers, c.Hidden, c.Heads, c.FFN)
}

// ScoreCandidates prunes each candidate, distills it briefly against the
// source and ranks the candidates by validation cross-entropy, lowest first (the
// paper's lightweight retraining before choosing an architecture). Every
// finished candidate is recorded at once, so a rerun after an interruption
// skips it; an interrupted distillation resumes from its checkpoint.
func ScoreCandidates(ctx context.Context, cs []Candidate, opt ScoreOptions) ([]Scored, error) {
	if opt.Retrain == nil {
		panic("prune: ScoreCandidates without ScoreOptions.Retrain")
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
		logf("candidate %d/%d %s: retraining", i+1, len(cs), c.Name())
		loss, err := opt.Retrain(ctx, mdir, filepath.Join(dir, "run"))
		if err != nil {
			return nil, fmt.Errorf("prune: candidate %s: %w", c.Name(), err)
		}
		if math.IsNaN(loss) {
			return nil, fmt.Errorf("prune: candidate %s: no validation cross-entropy (is the validation split empty?)", c.Name())
		}
		done[c.Name()] = Scored{Candidate: c, ValLoss: loss, Dir: dir}
		logf("candidate %d/%d %s: val ce %.4f", i+1, len(cs), c.Name(), loss)
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
	var list []struct {
		Scored
		Old *float64 `json:"val_loss"` // the name of val_ce in searches made before it
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("prune: %s: %w; delete it to score every candidate again", path, err)
	}
	for _, s := range list {
		if s.Old != nil {
			s.ValLoss = *s.Old
		}
		done[s.Name()] = s.Scored
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
