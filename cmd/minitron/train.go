package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/minitron/minitron/train"
)

func newTrain() *cobra.Command {
	var cfgPath, out string
	var sets []string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "train --config FILE.yaml --out DIR [--set key=value]...",
		Short: "Train a model (fresh or from a checkpoint) on prepared datasets",
		Long: `train runs AdamW training as FILE.yaml describes (model, data blend, batch,
steps or token budget, learning-rate schedule, validation and checkpoint
cadence), with --set overrides applied on top (e.g. --set optimizer.lr=1e-3).
Unknown keys are errors. The effective configuration is printed, saved in
DIR/config.yaml and in every checkpoint.

The optimizer section, with its defaults (the source of each is given in
docs/numerics.md):

  optimizer:
    lr: 3.0e-4            # peak, after a linear warmup of warmup steps
    min_lr: 3.0e-5        # the end of the schedule (cosine, linear, constant)
    warmup: 100
    schedule: cosine
    beta1: 0.9
    beta2: 0.95
    eps: 1.0e-8
    weight_decay: 0.1
    decay: matrices       # which parameters decay: every weight of two or
                          # more dimensions, embeddings and lm_head included
                          # (Megatron-LM); no_embeddings; all
    clip: 1.0             # global gradient norm (0: off)
    master_weights: true  # GPU: AdamW updates a float32 copy of each bf16
                          # weight; false: all-bf16, stochastic rounding
    grad_dtype: f32       # gradients accumulated over micro-batches (or bf16)
    state_dtype: f32      # Adam moments (or bf16)

On the CPU everything is float32 whatever the dtypes say. minitron inspect
--config FILE.yaml prints the run's memory plan on its device.

DIR receives metrics.jsonl (one line per step and per validation),
checkpoint-NNNNNNN directories (Hugging Face layout plus optimizer state,
written atomically) and, at the end, DIR/final with the exported model.
Rerunning the same command resumes from the newest complete checkpoint and
gives bit-identical results to an uninterrupted run. Ctrl-C finishes the
current step, writes a checkpoint and exits.

` + dataParallelHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := train.Load(cfgPath, sets)
			if err != nil {
				return err
			}
			y, _ := cfg.YAML()
			fmt.Fprintf(os.Stderr, "effective configuration:\n%s\n", y)
			devs, err := openTraining(cmd.Context(), cfg, timeout)
			if err != nil {
				return err
			}
			opt := train.RunOptions{Backend: devs.single}
			if devs.parallel() {
				opt.Replicas, opt.Group = devs.replicas(), devs.group
			}
			res, err := runTraining(cmd, cfg, out, opt)
			if err != nil || !devs.writes() {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "trained %d steps (%d tokens): loss %.4f, validation ce %.4f; model in %s\n",
				res.Steps, res.Tokens, res.TrainLoss, res.ValLoss, res.FinalDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "training configuration (YAML)")
	cmd.Flags().StringVar(&out, "out", "", "run directory (created; an existing run there is resumed)")
	cmd.Flags().StringArrayVar(&sets, "set", nil, "override a configuration value: `key.path=value`, e.g. --set train.steps=100 (repeatable)")
	addRendezvousTimeout(cmd, &timeout)
	cmd.MarkFlagRequired("config")
	cmd.MarkFlagRequired("out")
	return cmd
}

// dataParallelHelp explains multi-GPU runs in the help of train and distill.
const dataParallelHelp = `With device: cuda the run uses every visible GPU (cuda:0,1,... a subset),
one goroutine per GPU, data-parallel over NCCL with the optimizer state
sharded: the global batch stays micro_batch × accumulation sequences, the
accumulation micro-batches are split between the GPUs (accumulation must
be a multiple of their number), so any number of GPUs follows the same
trajectory. Over several nodes, start one process per node with torchrun
(--nproc_per_node=1; WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT) or srun
(--ntasks-per-node=1; SLURM_PROCID, SLURM_NTASKS, the job's first host);
the processes meet at MASTER_ADDR:MASTER_PORT, --out must be a folder all
nodes share, and rank 0 writes the logs and the model.`

// runTraining runs train.Run with a progress bar and SIGINT handling;
// opt holds the device(s) and the objective (distillation).
func runTraining(cmd *cobra.Command, cfg *train.Config, out string, opt train.RunOptions) (*train.Result, error) {
	interrupt, stop := onInterrupt()
	defer stop()
	var bar *progressbar.ProgressBar
	lastLog := time.Now()
	var p progress
	onStep := func(m train.Metric, total int) {
		desc := p.update(m)
		if m.ValCE != nil && !interactive() {
			return // train.Run logs each validation
		}
		if interactive() {
			if bar == nil {
				bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetWidth(25),
					progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionShowElapsedTimeOnFinish(),
					progressbar.OptionThrottle(200*time.Millisecond))
			}
			bar.Describe(desc)
			bar.Set(m.Step)
			return
		}
		if time.Since(lastLog) > 10*time.Second || m.Step == total {
			fmt.Fprintf(os.Stderr, "step %d/%d  %s\n", m.Step, total, desc)
			lastLog = time.Now()
		}
	}
	opt.Out, opt.OnStep, opt.Log, opt.Interrupt = out, onStep, logWriter{}, interrupt
	res, err := train.Run(cmd.Context(), cfg, opt)
	if bar != nil {
		bar.Finish()
		fmt.Fprintln(os.Stderr)
	}
	if errors.Is(err, train.ErrInterrupted) {
		return nil, err
	}
	return res, err
}

// logWriter prints run messages on their own line below a progress bar.
type logWriter struct{}

func (logWriter) Write(p []byte) (int, error) {
	if interactive() {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
	return os.Stderr.Write(p)
}

// progress is the one-line state of a training or distillation run: the
// latest step's loss (the objective; a distillation's kl when that is all
// it optimizes), the latest validation's cross-entropy on the held-out
// split (val ce), and the training throughput.
type progress struct {
	step, val string
	tokPerS   float64
}

// update takes a metrics line and returns the line to show.
func (p *progress) update(m train.Metric) string {
	if m.Loss != nil {
		kl, hasKL := m.Extra["kl"]
		switch {
		case hasKL && len(m.Extra) == 1:
			p.step = fmt.Sprintf("kl %.4f", kl)
		case hasKL:
			p.step = fmt.Sprintf("loss %.4f (kl %.4f)", *m.Loss, kl)
		default:
			p.step = fmt.Sprintf("loss %.4f", *m.Loss)
		}
		p.tokPerS = m.TokPerS
	}
	if m.ValCE != nil {
		p.val = fmt.Sprintf("val ce %.4f", *m.ValCE)
	}
	parts := []string{}
	for _, s := range []string{p.step, p.val} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	if p.tokPerS > 0 {
		parts = append(parts, fmt.Sprintf("%.0f tok/s", p.tokPerS))
	}
	return strings.Join(parts, " | ")
}
