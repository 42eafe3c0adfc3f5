package distill_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/importance"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/prune"
	"github.com/minitron/minitron/train"
)

// A short distillation: prune a teacher to half its width, then train the
// student for a few steps to match the teacher's next-token distribution
// (KL(teacher ‖ student) at temperature 1, as Minitron does). Here the
// sequences are random tokens; distill.Run trains on prepared datasets,
// with checkpoints, validation and resumption.
func Example() {
	const dir = "../testdata/hf/nemotron-tiny"
	be := cpu.New()
	cfg, err := model.LoadConfig(filepath.Join(dir, "config.json"))
	if err != nil {
		log.Fatal(err)
	}
	scores, err := importance.Load(filepath.Join(dir, "importance.safetensors"))
	if err != nil {
		log.Fatal(err)
	}
	plan, err := prune.NewPlan(cfg, scores, prune.Targets{Hidden: 32, Heads: 2, FFN: 96})
	if err != nil {
		log.Fatal(err)
	}
	tmp, err := os.MkdirTemp("", "distill-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	if _, err := prune.Apply(context.Background(), plan, dir, prune.ApplyOptions{Out: filepath.Join(tmp, "student")}); err != nil {
		log.Fatal(err)
	}
	teacher, err := model.Load(dir, be, nil)
	if err != nil {
		log.Fatal(err)
	}
	student, err := model.Load(filepath.Join(tmp, "student"), be, nil)
	if err != nil {
		log.Fatal(err)
	}
	obj, err := distill.NewObjective(teacher, student, distill.KD{Temperature: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer obj.Free()
	tc := train.Default()
	tc.Data.SeqLen, tc.Train.MicroBatch, tc.Train.Steps = 16, 4, 30
	tc.Optimizer.LR, tc.Optimizer.MinLR, tc.Optimizer.Warmup = 3e-3, 3e-4, 3
	t, err := train.NewTrainer(&tc, student, obj, &train.RandomBatcher{Vocab: cfg.VocabSize, Len: 16, Seed: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer t.Free()
	var first, last float64
	for t.Step < t.Total {
		st, err := t.TrainStep()
		if err != nil {
			log.Fatal(err)
		}
		if st.Step == 1 {
			first = st.Loss
		}
		last = st.Loss
	}
	fmt.Printf("%d steps of %d tokens; the KL to the teacher fell by more than a third: %v\n", t.Step, tc.TokensPerStep(), last < first*2/3)
	// Output:
	// 30 steps of 64 tokens; the KL to the teacher fell by more than a third: true
}
