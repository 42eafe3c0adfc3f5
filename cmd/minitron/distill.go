package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/train"
)

func newDistill() *cobra.Command {
	var cfgPath, out string
	var sets []string
	var validateOnly bool
	var timeout time.Duration
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
    model: DIR        # run the teacher in every step, or
    cache: DIR        # read its top-k from ` + "`distill cache-teacher`" + `
  kd:
    temperature: 1
    ce_weight: 0
    reverse: false
    intermediate:       # for depth-pruned students (Minitron's L_is)
      layers: [[2, 4]]  # [student layer, teacher layer] pairs, 1-based
      site: output      # or norm: the states after LayerNorm (the paper's)
      embedding: false  # also the embedding outputs (the paper's L_emb)
      weight: 0         # 0 balances it with the logit loss each step
      # channels: the projection's start (student channel i = teacher
      # channel channels[i]); default: the student's prune report

The intermediate loss is 1 - cos between the teacher's hidden states and a
learned projection of the student's, averaged over the pairs.

The loop is train's: same checkpoints, bit-identical resumption, metrics
and progress. metrics.jsonl names each quantity once: loss (the objective
optimized), kl (KL(teacher ‖ student) on the step's batch), train_ce (the
student's cross-entropy on it, with ce_weight), and at each validation
val_ce (the student's cross-entropy on the held-out split), val_kl and
val_teacher_ce. --validate-only measures val_ce, val_teacher_ce and val_kl,
and exits.

` + dataParallelHelp + `
Every GPU runs the teacher (or reads the cache) for its own micro-batches.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := distill.Load(cfgPath, sets)
			if err != nil {
				return err
			}
			if validateOnly {
				return validateDistill(cmd, cfg)
			}
			devs, err := openTraining(cmd.Context(), &cfg.Config, timeout)
			if err != nil {
				return err
			}
			if devs.writes() {
				y, _ := cfg.YAML()
				fmt.Fprintf(os.Stderr, "effective configuration:\n%s\n", y)
			}
			var objs []*distill.Objective
			opt := train.RunOptions{Backend: devs.single}
			if devs.parallel() {
				if objs, err = distill.NewObjectives(cfg, out, devs.group, devs.backends); err != nil {
					return err
				}
				opt.Replicas, opt.Group = devs.replicas(), devs.group
				for i := range opt.Replicas {
					opt.Replicas[i].Objective = objs[i]
				}
			} else {
				student, _, err := train.StartModel(&cfg.Config, out, devs.single)
				if err != nil {
					return err
				}
				obj, err := distill.NewObjectiveFor(cfg, student, devs.single)
				student.Free()
				if err != nil {
					return err
				}
				objs, opt.Objective = []*distill.Objective{obj}, obj
			}
			defer func() {
				for _, o := range objs {
					o.Free()
				}
			}()
			obj := objs[0]
			opt.Extra = obj.Extra
			if err := cfg.Prepare(&opt); err != nil {
				return err
			}
			res, err := runTraining(cmd, &cfg.Config, out, opt)
			if err != nil || !devs.writes() {
				return err
			}
			_, tl, kl := obj.ValidationLosses()
			fmt.Fprintf(cmd.OutOrStdout(), "distilled %d steps (%d tokens): validation ce %.4f (teacher %.4f), validation kl %.4f; model in %s\n",
				res.Steps, res.Tokens, res.ValLoss, tl, kl, res.FinalDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "distillation configuration (YAML)")
	cmd.Flags().StringVar(&out, "out", "", "run directory (an existing run there is resumed)")
	cmd.Flags().StringArrayVar(&sets, "set", nil, "override a configuration value: `key.path=value`, e.g. --set kd.temperature=2 (repeatable)")
	cmd.Flags().BoolVar(&validateOnly, "validate-only", false, "only measure student and teacher on the validation data")
	addRendezvousTimeout(cmd, &timeout)
	cmd.MarkFlagRequired("config")
	cmd.AddCommand(newCacheTeacher())
	return cmd
}

func newCacheTeacher() *cobra.Command {
	var opt distill.CacheOptions
	var dev string
	cmd := &cobra.Command{
		Use:   "cache-teacher --teacher DIR --data DATASET --seq-len T --out DIR2",
		Short: "Run the teacher once over a dataset and store its top-k log-probabilities",
		Long: `cache-teacher runs the teacher over every sequence of --seq-len tokens of a
prepared dataset and stores, for each position, its --top-k most likely
tokens and their log-probabilities at --temperature, in zstd Arrow shards
aligned with the dataset's sequences. The manifest records k, the
temperature, the teacher and dataset identities and --missing, the policy
distillation applies to the probability mass outside the k tokens
(renormalize the k, or spread it uniformly over the other tokens). A
distillation config then names the cache (teacher.cache) instead of the
teacher and needs no teacher in memory.

Storage: k × 8 bytes per token before compression (k int32 ids and k
float32 log-probabilities), printed with the total before the teacher runs.
The Minitron paper found that distilling from the top-K ≤ 100 logits loses
significant accuracy (arXiv:2407.14679, A.5); the default k is 128 (this
tool's choice above that range) and a smaller --top-k is warned about.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			be, err := openBackend(dev)
			if err != nil {
				return err
			}
			teacher, err := loadModel(opt.TeacherDir, be)
			if err != nil {
				return err
			}
			if opt.K < distill.LossyTopK {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: --top-k %d: the Minitron paper found that distilling from the top-K <= %d logits loses significant accuracy (arXiv:2407.14679, A.5)\n", opt.K, distill.LossyTopK)
			}
			opt.Start = func(seqs, tokens, bytes int64) {
				fmt.Fprintf(cmd.ErrOrStderr(), "caching top-%d of %d sequences of %d tokens: %d bytes per token, %s for %s tokens before compression\n",
					opt.K, seqs, opt.SeqLen, distill.BytesPerToken(opt.K), human(bytes), count(tokens))
			}
			bar := newBar(0, "caching the teacher")
			opt.Progress = func(done, total int64) {
				if bar != nil {
					bar.ChangeMax64(total)
					bar.Set64(done)
				}
			}
			start := time.Now()
			m, err := distill.CacheTeacher(cmd.Context(), teacher, opt)
			if bar != nil {
				bar.Finish()
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cached top-%d of %d sequences of %d tokens in %s (%v)\n", m.K, m.Sequences, m.SeqLen, opt.Out, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.TeacherDir, "teacher", "", "teacher model directory")
	f.StringVar(&opt.DatasetDir, "data", "", "prepared dataset")
	f.IntVar(&opt.SeqLen, "seq-len", 4096, "sequence length (the distillation run's data.seq_len)")
	f.IntVar(&opt.K, "top-k", 128, "tokens kept per position (below 100 the Minitron paper lost accuracy)")
	f.Float64Var(&opt.Temperature, "temperature", 1, "temperature of the stored log-probabilities (the run's kd.temperature)")
	f.StringVar(&opt.Missing, "missing", "renormalize", "mass outside the top k: renormalize or uniform")
	f.StringVar(&opt.Out, "out", "", "cache directory")
	f.IntVar(&opt.MicroBatch, "batch-size", 8, "sequences per teacher forward pass")
	addDevice(cmd, &dev)
	for _, n := range []string{"teacher", "data", "out"} {
		cmd.MarkFlagRequired(n)
	}
	return cmd
}

func validateDistill(cmd *cobra.Command, cfg *distill.Config) error {
	be, err := openBackend(cfg.Device)
	if err != nil {
		return err
	}
	student, _, err := train.StartModel(&cfg.Config, "", be)
	if err != nil {
		return err
	}
	obj, err := distill.NewObjectiveFor(cfg, student, be)
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
	fmt.Fprintf(cmd.OutOrStdout(), "validation over %d batches of %d×%d tokens: student ce %.4f, teacher ce %.4f, kl(teacher‖student) %.4f\n",
		max(1, cfg.Eval.Batches), cfg.Train.MicroBatch, cfg.Data.SeqLen, s, tl, kl)
	return nil
}
