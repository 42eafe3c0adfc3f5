package recipes

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/train"
)

// recordedCE is a cross-entropy on the eval stage's held-out sequences
// that a distillation's last validation measured.
type recordedCE struct {
	ce   float64
	run  string // the distillation's directory
	step int
}

// finalValidation reads the record of the distillation in dir, which the
// recipe runs with cfg (its config.yaml and metrics.jsonl), and returns the
// val_ce of its final student and the val_teacher_ce of its teacher,
// cfg.Teacher.Model (nil when they cannot be reused), as measures of those
// models on the sequences that the evaluation reads
// (train.ValidationSequences with want's data, micro-batch and
// eval.batches), on a backend computing in float dt.
//
// They are reused only when nothing can make them differ from what
// eval.PerplexityOn computes but the order of the float64 sums: the last
// line of the record is a validation at the run's final step, made with the
// same data, sequence length, held-out fraction, seed, micro-batch and
// number of validation batches as want, on the same kind of device, with an
// online teacher; the student's, in addition, only when the final model
// holds the validated weights bit for bit (exported as f32 from float32
// weights: a bf16 export rounds them, which moves its cross-entropy by
// about 1e-5). Both paths then compute the same per-token float32 losses
// from the same logits (the same model code, micro-batches and LM-head
// chunks; validation's teacher states are kept to the bit), and sum them in
// float64 in another grouping (per batch, then over batches, in
// PerplexityOn; over all rows in validation): the two can differ in the
// last bits of a float64, 1e-16 relative, and report.json then holds the
// validation's value, which rounds to the same 4 decimals but in the rare
// case of a value on a rounding boundary.
//
// why says why the student's is not reused, for the log.
func finalValidation(dir string, cfg, want *distill.Config, dt backend.DType) (student, teacher *recordedCE, why string) {
	run, err := distill.Load(filepath.Join(dir, "config.yaml"), nil)
	if err != nil {
		return nil, nil, fmt.Sprintf("the distillation's settings are unreadable (%v)", err)
	}
	total := cfg.TotalSteps()
	switch {
	case !reflect.DeepEqual(run.Data, want.Data):
		return nil, nil, "the distillation's data settings differ from the evaluation's"
	case run.Train.MicroBatch != want.Train.MicroBatch:
		return nil, nil, fmt.Sprintf("the distillation validated in micro-batches of %d sequences, the evaluation reads %d", run.Train.MicroBatch, want.Train.MicroBatch)
	case run.Eval.Batches != want.Eval.Batches:
		return nil, nil, fmt.Sprintf("the distillation validated on %d batches, the evaluation reads %d", run.Eval.Batches, want.Eval.Batches)
	case run.TotalSteps() != total:
		return nil, nil, fmt.Sprintf("the distillation ran %d steps, the recipe asks for %d", run.TotalSteps(), total)
	case train.DeviceKind(run.Device) != train.DeviceKind(cfg.Device):
		return nil, nil, fmt.Sprintf("the distillation ran on %s, the evaluation on %s", run.Device, cfg.Device)
	}
	if _, err := os.Stat(filepath.Join(dir, train.FinalDir, "config.json")); err != nil {
		return nil, nil, "the distillation has no final model"
	}
	ms, err := train.ReadMetrics(dir)
	if err != nil || len(ms) == 0 {
		return nil, nil, "the distillation's metrics are unreadable"
	}
	last := ms[len(ms)-1]
	if last.ValCE == nil || last.Step != total {
		return nil, nil, fmt.Sprintf("the distillation's metrics do not end with a validation at step %d", total)
	}
	if run.Checkpoint.ExportDType == "f32" && dt == backend.F32 {
		student = &recordedCE{ce: *last.ValCE, run: dir, step: last.Step}
	} else {
		why = fmt.Sprintf("the distillation exported it as %s from %s weights, not the weights it validated", run.Checkpoint.ExportDType, dt)
	}
	if v, ok := last.Extra["val_teacher_ce"]; ok && run.Teacher.Cache == "" && run.Teacher.Model == cfg.Teacher.Model {
		teacher = &recordedCE{ce: v, run: dir, step: last.Step}
	}
	return student, teacher, why
}
