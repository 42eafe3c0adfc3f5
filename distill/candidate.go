package distill

import (
	"context"
	"errors"
	"fmt"

	"github.com/minitron/minitron/train"
)

// Retrainer returns the short distillation an architecture search ranks
// pruned candidates by (prune.ScoreOptions.Retrain): it distills the
// model in modelDir from the teacher in cfg.Teacher for cfg's steps, with
// its checkpoints in runDir (an interrupted one resumes there), and
// returns the validation cross-entropy at the end. cfg's model and
// validation cadence are set per call; opt.Out is runDir.
func Retrainer(cfg Config, opt train.RunOptions) func(ctx context.Context, modelDir, runDir string) (float64, error) {
	return func(ctx context.Context, modelDir, runDir string) (float64, error) {
		c := cfg
		c.Model = train.ModelConfig{Checkpoint: modelDir, Tokenizer: cfg.Model.Tokenizer}
		c.Eval.Every = 0 // once, at the end
		o := opt
		o.Out = runDir
		res, _, err := Run(ctx, &c, o)
		if errors.Is(err, train.ErrInterrupted) {
			return 0, fmt.Errorf("distill: interrupted; rerun the same command to resume: %w", err)
		}
		if err != nil {
			return 0, err
		}
		return res.ValLoss, nil // NaN without validation
	}
}
