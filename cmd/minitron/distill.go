package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/train"
)

func newDistill() *cobra.Command {
	var cfgPath, out string
	var sets []string
	var validateOnly bool
	cmd := &cobra.Command{
		Use:   "distill --config FILE.yaml --out DIR [--set key=value]... [--validate-only]",
		Short: "Retrain a student against a teacher's logits (knowledge distillation)",
		Long: `distill trains the student (model.checkpoint, usually a pruned teacher) to
match the teacher's next-token distribution: the loss is T²·KL(teacher ‖
student) on the logits at temperature kd.temperature (Minitron: T = 1, no
cross-entropy term); kd.ce_weight adds next-token cross-entropy and
kd.reverse uses KL(student ‖ teacher). The teacher runs in the same step
without gradients. The file is a training configuration (see train) plus

  teacher:
    model: DIR
  kd:
    temperature: 1
    ce_weight: 0
    reverse: false

The loop is train's: same checkpoints, bit-identical resumption, metrics
(with the KL and, at validation, the teacher's loss) and progress.
--validate-only measures the student's and the teacher's validation loss and
their KL, and exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := distill.Load(cfgPath, sets)
			if err != nil {
				return err
			}
			be, err := openBackend(cfg.Device)
			if err != nil {
				return err
			}
			if validateOnly {
				return validateDistill(cmd, cfg)
			}
			y, _ := cfg.YAML()
			fmt.Fprintf(os.Stderr, "effective configuration:\n%s\n", y)
			teacher, err := model.Load(cfg.Teacher.Model, be, nil)
			if err != nil {
				return err
			}
			student, _, err := train.StartModel(&cfg.Config, out, be)
			if err != nil {
				return err
			}
			obj, err := distill.NewObjective(teacher, student, cfg.KD)
			student.Free()
			if err != nil {
				return err
			}
			defer obj.Free()
			res, err := runTraining(cmd, &cfg.Config, out, be, obj, obj.Extra)
			if err != nil {
				return err
			}
			_, tl, kl := obj.ValidationLosses()
			fmt.Fprintf(cmd.OutOrStdout(), "distilled %d steps (%d tokens): validation loss %.4f (teacher %.4f, KL %.4f); model in %s\n",
				res.Steps, res.Tokens, res.ValLoss, tl, kl, res.FinalDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "distillation configuration (YAML)")
	cmd.Flags().StringVar(&out, "out", "", "run directory (an existing run there is resumed)")
	cmd.Flags().StringArrayVar(&sets, "set", nil, "override a configuration value, e.g. --set kd.temperature=2 (repeatable)")
	cmd.Flags().BoolVar(&validateOnly, "validate-only", false, "only measure student and teacher on the validation data")
	cmd.MarkFlagRequired("config")
	return cmd
}

func validateDistill(cmd *cobra.Command, cfg *distill.Config) error {
	be, err := openBackend(cfg.Device)
	if err != nil {
		return err
	}
	teacher, err := model.Load(cfg.Teacher.Model, be, nil)
	if err != nil {
		return err
	}
	student, _, err := train.StartModel(&cfg.Config, "", be)
	if err != nil {
		return err
	}
	obj, err := distill.NewObjective(teacher, student, cfg.KD)
	if err != nil {
		return err
	}
	_, val, err := train.OpenData(&cfg.Config, student.Config.VocabSize)
	if err != nil {
		return err
	}
	if val == nil {
		return fmt.Errorf("distill: no validation data (data.val_fraction is 0)")
	}
	t, err := train.NewTrainer(&cfg.Config, student, obj, val)
	if err != nil {
		return err
	}
	if _, err := t.Evaluate(val, max(1, cfg.Eval.Batches)); err != nil {
		return err
	}
	s, tl, kl := obj.ValidationLosses()
	fmt.Fprintf(cmd.OutOrStdout(), "validation over %d batches of %d×%d tokens: student loss %.4f, teacher loss %.4f, KL(teacher‖student) %.4f\n",
		max(1, cfg.Eval.Batches), cfg.Train.MicroBatch, cfg.Data.SeqLen, s, tl, kl)
	return nil
}
