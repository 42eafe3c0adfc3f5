package recipes

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/eval"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/train"
)

// TestEvalReusesValidation checks that the eval stage takes the teacher's
// and the final student's val ce from the distillation's last validation
// when that measured them on its sequences, and that they are what
// eval.PerplexityOn computes from the models on disk (up to the order of
// float64 sums); that a rerun of the eval stage alone, and any setting that
// changes the sequences or the models, measures them instead.
func TestEvalReusesValidation(t *testing.T) {
	path := setup(t)
	r, err := Load(path, []string{"distill.checkpoint.export_dtype=f32", "eval.tasks=[]"})
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	sum, err := Run(context.Background(), r, RunOptions{Backend: cpu.New(), Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"teacher", "student (distilled)"} {
		if !strings.Contains(log.String(), who+": val ce ") || !strings.Contains(log.String(), "from the validation at step 6 of ") {
			t.Errorf("the log does not say %s's val ce came from the validation:\n%s", who, log.String())
		}
	}
	// The independent measurement: the models as the eval stage loads them,
	// on the distillation's held-out sequences.
	dir := r.distillDir(0)
	run, err := distill.Load(filepath.Join(dir, "config.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ms := sum.Report.Models
	if len(ms) != 3 {
		t.Fatalf("%d models in the report", len(ms))
	}
	b := cpu.New()
	for _, mr := range ms {
		m, err := model.Load(mr.Dir, b, nil)
		if err != nil {
			t.Fatal(err)
		}
		val, err := train.ValidationSequences(&run.Config, m.Config.VocabSize)
		if err != nil {
			t.Fatal(err)
		}
		res, err := eval.PerplexityOn(context.Background(), m, val, run.Train.MicroBatch)
		m.Free()
		if err != nil {
			t.Fatal(err)
		}
		// float64 sums of float32 losses in another order
		if math.Abs(mr.ValCE-res.Loss) > 1e-12*res.Loss || mr.Tokens != res.Tokens || math.Abs(mr.Perplexity-res.Perplexity) > 1e-12*res.Perplexity {
			t.Errorf("%s: val ce %v, perplexity %v over %d tokens in the report; PerplexityOn: %v, %v, %d", mr.Name, mr.ValCE, mr.Perplexity, mr.Tokens, res.Loss, res.Perplexity, res.Tokens)
		}
	}
	// The eval stage alone has no validation of this process to reuse.
	log.Reset()
	again, err := Run(context.Background(), r, RunOptions{Backend: cpu.New(), Log: &log, From: "eval", Until: "eval"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(log.String(), "from the validation") {
		t.Errorf("--from eval reused a validation:\n%s", log.String())
	}
	for i, mr := range again.Report.Models {
		if math.Abs(mr.ValCE-ms[i].ValCE) > 1e-12*mr.ValCE {
			t.Errorf("%s: val ce %v measured, %v reused", mr.Name, mr.ValCE, ms[i].ValCE)
		}
	}

	// What finalValidation accepts: the run's own settings, and nothing
	// that changes the sequences, the models or the device.
	cases := []struct {
		name             string
		change           func(cfg, want *distill.Config)
		dt               backend.DType
		student, teacher bool
		why              string
	}{
		{"same", func(cfg, want *distill.Config) {}, backend.F32, true, true, ""},
		{"eval.batches", func(cfg, want *distill.Config) { want.Eval.Batches++ }, backend.F32, false, false, "validated on 2 batches, the evaluation reads 3"},
		{"micro_batch", func(cfg, want *distill.Config) { want.Train.MicroBatch = 2 }, backend.F32, false, false, "micro-batches of 4 sequences"},
		{"seed", func(cfg, want *distill.Config) { want.Data.Seed++ }, backend.F32, false, false, "data settings"},
		{"val_fraction", func(cfg, want *distill.Config) { want.Data.ValFraction = 0.1 }, backend.F32, false, false, "data settings"},
		{"seq_len", func(cfg, want *distill.Config) { want.Data.SeqLen = 16 }, backend.F32, false, false, "data settings"},
		{"steps", func(cfg, want *distill.Config) { cfg.Train.Steps = 9 }, backend.F32, false, false, "the recipe asks for 9"},
		{"device", func(cfg, want *distill.Config) { cfg.Device = "cuda" }, backend.F32, false, false, "ran on cpu"},
		{"teacher", func(cfg, want *distill.Config) { cfg.Teacher.Model += "-other" }, backend.F32, true, false, ""},
		{"bf16 weights", func(cfg, want *distill.Config) {}, backend.BF16, false, true, "exported it as f32 from BF16 weights"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, _ := distill.Load(filepath.Join(dir, "config.yaml"), nil)
			want, _ := distill.Load(filepath.Join(dir, "config.yaml"), nil)
			c.change(cfg, want)
			student, teacher, why := finalValidation(dir, cfg, want, c.dt)
			if (student != nil) != c.student || (teacher != nil) != c.teacher || !strings.Contains(why, c.why) || (c.why == "") != (why == "") {
				t.Fatalf("student %v, teacher %v, why %q; want %v, %v, %q", student, teacher, why, c.student, c.teacher, c.why)
			}
			if student != nil && student.ce != ms[2].ValCE || teacher != nil && teacher.ce != ms[0].ValCE {
				t.Fatalf("student %+v, teacher %+v; the report has %v and %v", student, teacher, ms[2].ValCE, ms[0].ValCE)
			}
		})
	}
}
