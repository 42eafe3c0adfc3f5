package distill

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/dist"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
	"github.com/minitron/minitron/train"
)

// TestDataParallelDistillation: distillation with the online teacher and
// the intermediate-state loss (whose projection is a parameter of the
// objective, sharded with the model's), and from the teacher cache, on 2
// ranks of one process and on 2 processes of one rank, follows the run on
// one device: losses, KL and the teacher's validation loss agree up to
// the rounding of the reduction order, the validation batches being
// spread unevenly (3 over 2 ranks).
func TestDataParallelDistillation(t *testing.T) {
	_, teacherDir, _, student := cacheSetup(t)
	ds := validationDataset(t)
	sdir := filepath.Join(t.TempDir(), "student")
	os.MkdirAll(sdir, 0o755)
	student.Save(sdir, backend.F32, 1<<30)
	base := Default()
	base.Model.Checkpoint = sdir
	base.Data = train.DataConfig{Datasets: []train.Dataset{{Path: ds, Weight: 1}}, SeqLen: 8, Seed: 1, Shuffle: true, ValFraction: 0.1}
	base.Train.MicroBatch, base.Train.Accumulation, base.Train.Steps = 2, 4, 4
	base.Optimizer.Warmup = 1
	base.Eval.Every, base.Eval.Batches = 2, 3
	base.Checkpoint.Every = 2
	online := base
	online.Teacher.Model = teacherDir
	online.KD.Intermediate.Layers = [][2]int{{1, 1}, {2, 2}}
	cached := base
	cached.Teacher.Cache = filepath.Join(t.TempDir(), "cache")
	tm, err := model.Load(teacherDir, cpu.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CacheTeacher(context.Background(), tm, CacheOptions{TeacherDir: teacherDir, DatasetDir: ds, SeqLen: 8, K: 16, Temperature: 1, Missing: backend.MissingRenormalize, Out: cached.Teacher.Cache, MicroBatch: 4}); err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]*Config{"online": &online, "cached": &cached} {
		t.Run(name, func(t *testing.T) {
			one := t.TempDir()
			if _, _, err := Run(context.Background(), cfg, train.RunOptions{Out: one, Backend: cpu.New()}); err != nil {
				t.Fatal(err)
			}
			ref, _ := train.ReadMetrics(one)
			for _, procs := range [][]int{{2}, {1, 1}} {
				out := t.TempDir()
				if err := runRanks(cfg, out, procs); err != nil {
					t.Fatalf("%v: %v", procs, err)
				}
				got, _ := train.ReadMetrics(out)
				if len(got) != len(ref) {
					t.Fatalf("%v: %d metric lines, want %d", procs, len(got), len(ref))
				}
				worst := 0.0
				for i := range ref {
					a, b := ref[i], got[i]
					pairs := [][2]float64{}
					if a.Loss != nil {
						pairs = append(pairs, [2]float64{*a.Loss, *b.Loss}, [2]float64{a.Extra["kl"], b.Extra["kl"]})
					}
					if a.ValCE != nil {
						pairs = append(pairs, [2]float64{*a.ValCE, *b.ValCE}, [2]float64{a.Extra["val_kl"], b.Extra["val_kl"]},
							[2]float64{a.Extra["val_teacher_ce"], b.Extra["val_teacher_ce"]})
					}
					for _, p := range pairs {
						worst = max(worst, math.Abs(p[0]-p[1])/max(math.Abs(p[0]), 1e-6))
					}
				}
				if worst > 1e-4 {
					t.Fatalf("%v: relative difference %.3g from the run on one device", procs, worst)
				}
				t.Logf("GPUs per process %v: largest relative difference %.3g", procs, worst)
			}
		})
	}
}

// runRanks distills on CPU ranks, as processes of the given numbers of ranks.
func runRanks(cfg *Config, out string, procs []int) error {
	return errors.Join(dist.LocalJob(procs, func() backend.Backend { return cpu.New() }, func(p int, g *dist.Group, bs []backend.Backend, cs []dist.Comm) error {
		_, _, err := Run(context.Background(), cfg, train.RunOptions{Out: out, Replicas: train.Replicas(bs, cs), Group: g})
		return err
	})...)
}

// validationDataset is a dataset large enough for a validation split at
// sequences of 8 tokens.
func validationDataset(t *testing.T) string {
	dir := t.TempDir()
	var text strings.Builder
	for i := range 100 {
		fmt.Fprintf(&text, "func f%d() int { return %d }\n", i%37, i%11)
	}
	os.WriteFile(filepath.Join(dir, "in.txt"), []byte(text.String()), 0o644)
	tok, _ := tokenizer.LoadSentencePiece("../testdata/tokenizer/spm-nemotron-style.model")
	ds := filepath.Join(dir, "ds")
	if _, err := data.Prepare(context.Background(), data.PrepareOptions{Inputs: []string{filepath.Join(dir, "in.txt")}, Out: ds, Tokenizer: tok, SplitLines: true, AddEOS: true}); err != nil {
		t.Fatal(err)
	}
	return ds
}
