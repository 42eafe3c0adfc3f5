package distill

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/train"
)

// TestResumeChecks: a distillation's config.yaml holds its whole
// configuration (teacher and loss included) and runs again as it is; a
// resumed run refuses another loss or another teacher, naming the key and
// both values, and takes a longer run or a moved teacher.
func TestResumeChecks(t *testing.T) {
	ds, teacherDir, _, student := cacheSetup(t)
	root := t.TempDir()
	sdir := filepath.Join(root, "student")
	os.MkdirAll(sdir, 0o755)
	student.Save(sdir, backend.F32, 1<<30)
	cfg := Default()
	cfg.Model.Checkpoint = sdir
	cfg.Teacher.Model = teacherDir
	cfg.Data = train.DataConfig{Datasets: []train.Dataset{{Path: ds, Weight: 1}}, SeqLen: 8, Seed: 1, Shuffle: true}
	cfg.Train.MicroBatch, cfg.Train.Steps = 4, 4
	cfg.Optimizer.Warmup = 1
	cfg.Eval.Batches = 0
	cfg.Checkpoint.Every = 2
	out := filepath.Join(root, "run")
	run := func(c *Config) (*train.Result, error) {
		res, _, err := Run(context.Background(), c, train.RunOptions{Out: out, Backend: cpu.New()})
		return res, err
	}
	if _, err := run(&cfg); err != nil {
		t.Fatal(err)
	}
	saved, err := Load(filepath.Join(out, "config.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if saved.Teacher.Model != teacherDir || saved.KD.Temperature != 1 || saved.Train.Steps != 4 {
		t.Fatalf("config.yaml: teacher %q, kd %+v, steps %d", saved.Teacher.Model, saved.KD, saved.Train.Steps)
	}
	if res, err := run(saved); err != nil || res.Steps != 4 {
		t.Fatalf("rerun of config.yaml: %+v %v", res, err)
	}
	for _, c := range []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"temperature", func(c *Config) { c.KD.Temperature = 3 }, "kd.temperature: 1 (the run's) → 3 (now)"},
		{"ce weight", func(c *Config) { c.KD.CEWeight = 0.5 }, "kd.ce_weight: 0 (the run's) → 0.5 (now)"},
		{"teacher", func(c *Config) { c.Teacher.Model = sdir }, "teacher.model: " + teacherDir + " (the run's) → " + sdir + " (now)"},
		{"lr", func(c *Config) { c.Optimizer.LR = 1e-3 }, "optimizer.lr: 0.0003 (the run's) → 0.001 (now)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			changed := *saved
			changed.Train.Steps = 6
			c.change(&changed)
			_, err := run(&changed)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", err, c.want)
			}
			t.Log(err)
		})
	}
	// Moved, the teacher is the same teacher; its files rewritten in
	// place, it is another model under the same path.
	moved := filepath.Join(root, "teacher-moved")
	if err := os.Rename(teacherDir, moved); err != nil {
		t.Fatal(err)
	}
	longer := *saved
	longer.Train.Steps = 6
	longer.Teacher.Model = moved
	if res, err := run(&longer); err != nil || res.ResumedFrom != 4 || res.Steps != 6 {
		t.Fatalf("a longer run with the teacher moved: %+v %v", res, err)
	}
	cfgJSON := filepath.Join(moved, "config.json")
	b, _ := os.ReadFile(cfgJSON)
	os.WriteFile(cfgJSON, append(b, ' '), 0o644)
	longer.Train.Steps = 8
	if _, err := run(&longer); err == nil || !strings.Contains(err.Error(), "teacher.model: the same path, but not the same content") {
		t.Fatalf("a changed teacher: %v", err)
	}
}
