package distill

import (
	"context"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/dist"
	"github.com/minitron/minitron/train"
)

// Sums over micro-batches, which the trainer adds up over the GPUs of a
// data-parallel run so that every rank reports the whole step and the
// whole validation.

// BeginStep starts a step's sums (train.StepSummer).
func (o *Objective) BeginStep() {
	o.step.kl, o.step.ce, o.step.klRows, o.step.ceRows = 0, 0, 0, 0
	o.step.open = true
	o.val.since = false
}

// StepSums returns the step's KL and CE sums and their rows
// (train.StepSummer).
func (o *Objective) StepSums() []float64 {
	return []float64{o.step.kl, o.step.ce, float64(o.step.klRows), float64(o.step.ceRows)}
}

// SetStepSums replaces the step's sums by the totals over the GPUs
// (train.StepSummer).
func (o *Objective) SetStepSums(v []float64) {
	o.step.kl, o.step.ce, o.step.klRows, o.step.ceRows = v[0], v[1], int(v[2]), int(v[3])
}

// EvalSums returns the validation's sums since BeginEval (train.EvalSummer).
func (o *Objective) EvalSums() []float64 {
	return []float64{o.val.student, o.val.teacher, o.val.kl, float64(o.val.ceRows), float64(o.val.klRows)}
}

// SetEvalSums replaces the validation's sums by the totals over the GPUs
// (train.EvalSummer).
func (o *Objective) SetEvalSums(v []float64) {
	o.val.student, o.val.teacher, o.val.kl, o.val.ceRows, o.val.klRows = v[0], v[1], v[2], int(v[3]), int(v[4])
}

// NewObjectives builds the objective of each rank of a data-parallel run,
// on the rank's backend, from the rank's goroutine of g: every GPU runs
// the teacher (or reads the cache) for its own micro-batches.
func NewObjectives(cfg *Config, out string, g *dist.Group, bs []backend.Backend) ([]*Objective, error) {
	objs := make([]*Objective, len(bs))
	err := g.Do(func(i int) error {
		// The student as the run starts from, for its shape.
		student, _, err := train.StartModel(&cfg.Config, out, bs[i])
		if err != nil {
			return err
		}
		objs[i], err = NewObjectiveFor(cfg, student, bs[i])
		student.Free()
		return err
	})
	if err != nil {
		for _, o := range objs {
			if o != nil {
				o.Free()
			}
		}
		return nil, err
	}
	return objs, nil
}

// runParallel is Run for the ranks of a data-parallel run.
func runParallel(ctx context.Context, cfg *Config, opt train.RunOptions) (*train.Result, *Objective, error) {
	reps := append([]train.Replica(nil), opt.Replicas...)
	bs := make([]backend.Backend, len(reps))
	for i, r := range reps {
		bs[i] = r.Backend
	}
	objs, err := NewObjectives(cfg, opt.Out, opt.Group, bs)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		for _, o := range objs {
			o.Free()
		}
	}()
	for i := range reps {
		reps[i].Objective = objs[i]
	}
	opt.Replicas = reps
	if opt.Extra == nil {
		opt.Extra = objs[0].Extra
	}
	res, err := train.Run(ctx, &cfg.Config, opt)
	return res, objs[0], err
}
