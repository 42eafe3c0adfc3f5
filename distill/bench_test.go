package distill

import (
	"testing"

	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/internal/cputime"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/train"
)

// tinyModels loads the default recipe's teacher and makes a student of
// its pruned shape.
func tinyModels(b *testing.B) (teacher, student *model.Model) {
	teacher, err := model.Load("../models/tiny-teacher", cpu.New(), nil)
	if err != nil {
		b.Fatal(err)
	}
	sc := *teacher.Config
	sc.HiddenSize, sc.NumHeads, sc.IntermediateSize = 96, 4, 384
	if student, err = model.Random(&sc, teacher.Backend, 1); err != nil {
		b.Fatal(err)
	}
	return teacher, student
}

// BenchmarkKDStepTiny times one optimizer step of the embedded default
// recipe's distillation (recipes/tiny.yaml): the committed tiny teacher
// (3.9M parameters) and a student of its pruned shape (hidden 96, 4 heads
// in 2 KV groups, MLP 384, 6 layers; 1.4M parameters), 16 sequences of
// 256 tokens, AdamW. It reports tokens/s and the CPU time per step
// (cpu-ms/op), which a loaded machine inflates far less than wall time.
func BenchmarkKDStepTiny(b *testing.B) {
	teacher, student := tinyModels(b)
	sc := *student.Config
	obj, err := NewObjective(teacher, student, KD{Temperature: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer obj.Free()
	const batch, seq = 16, 256
	cfg := train.Default()
	cfg.Data.SeqLen = seq
	cfg.Train.MicroBatch = batch
	cfg.Train.Steps = 1 << 30
	t, err := train.NewTrainer(&cfg, student, obj, &train.RandomBatcher{Vocab: sc.VocabSize, Len: seq, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer t.Free()
	if _, err := t.TrainStep(); err != nil { // warm-up: buffers are made on the first step
		b.Fatal(err)
	}
	b.ResetTimer()
	c0 := cputime.Now()
	for range b.N {
		if _, err := t.TrainStep(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(batch*seq*b.N)/b.Elapsed().Seconds(), "tokens/s")
	b.ReportMetric(float64(cputime.Now()-c0)/1e6/float64(b.N), "cpu-ms/op")
}

// BenchmarkValidationTiny times one validation of the default recipe's
// distillation (recipes/tiny.yaml: 8 batches of 16 sequences of 256
// tokens, the teacher and student of BenchmarkKDStepTiny) once the
// teacher's final-norm states of the batches are kept from a first
// validation, against the same validation with a fresh objective each
// time (the teacher's trunk run again); cpu-ms/op is per validation.
func BenchmarkValidationTiny(b *testing.B) {
	teacher, student := tinyModels(b)
	be, sc := teacher.Backend, *student.Config
	const batches, batch, seq = 8, 16, 256
	r := &train.RandomBatcher{Vocab: sc.VocabSize, Len: seq, Seed: 1}
	var ins []model.Input
	var targets [][]int32
	for range batches {
		seqs, _ := r.Batch(batch)
		ids := make([]int32, 0, batch*seq)
		for s := range batch {
			ids = append(ids, seqs[s*(seq+1):s*(seq+1)+seq]...)
		}
		ins = append(ins, model.Input{B: batch, T: seq, IDs: ids})
		targets = append(targets, model.NextTokenTargets(ids, batch, seq))
	}
	a, err := student.NewActivations(batch*seq, false)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Free(be)
	validate := func(o *Objective) {
		o.BeginEval()
		for i, in := range ins {
			if _, err := o.Loss(student, a, in, targets[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, cached := range []bool{false, true} {
		name := "fresh"
		if cached {
			name = "cached"
		}
		b.Run(name, func(b *testing.B) {
			o, err := NewObjective(teacher, student, KD{Temperature: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { o.Free() }()
			validate(o)
			b.ResetTimer()
			c0 := cputime.Now()
			for range b.N {
				if !cached {
					b.StopTimer()
					o.Free()
					if o, err = NewObjective(teacher, student, KD{Temperature: 1}); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				validate(o)
			}
			b.ReportMetric(float64(cputime.Now()-c0)/1e6/float64(b.N), "cpu-ms/op")
		})
	}
}
