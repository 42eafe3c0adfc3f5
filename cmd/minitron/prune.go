package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/importance"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/prune"
	"github.com/minitron/minitron/train"
)

func newPrune() *cobra.Command {
	var modelDir, scores, out, read string
	var t prune.Targets
	var drop string
	cmd := &cobra.Command{
		Use:   "prune --model DIR --scores SCORES.safetensors --hidden-size H --num-attention-heads A --intermediate-size F --out DIR2",
		Short: "Slice a model to a smaller shape using importance scores",
		Long: `prune keeps the most important embedding channels (globally), query heads
(ranked inside each KV group, the same number kept per group, KV groups
kept), MLP neurons (per layer) and layers (--num-layers drops the least
important by --depth-metric; --drop-layers names them). Kept indices stay in
ascending order. Every target is checked before any work.

The output is a standard Hugging Face directory: config.json with an explicit
head_dim, safetensors in the source dtype (sharded), the tokenizer files, and
prune-report.json with what was kept and the parameter counts. Tensors stream
one at a time, a block of rows at a time, and only the kept rows are read
(many reads in flight), so a model larger than RAM prunes in little memory.
A large source that is not already in the page cache is read with direct
I/O (see --read). A failed prune leaves no output directory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, f := range strings.Split(drop, ",") {
				if f = strings.TrimSpace(f); f == "" {
					continue
				}
				l, err := strconv.Atoi(f)
				if err != nil {
					return fmt.Errorf("--drop-layers: %q is not a layer number", f)
				}
				t.DropLayers = append(t.DropLayers, l)
			}
			cfg, err := model.LoadConfig(filepath.Join(modelDir, "config.json"))
			if err != nil {
				return err
			}
			s, err := importance.Load(scores)
			if err != nil {
				return err
			}
			p, err := prune.NewPlan(cfg, s, t)
			if err != nil {
				return err
			}
			bar := newBar(0, "pruning")
			start := time.Now()
			rep, err := prune.Apply(cmd.Context(), p, modelDir, prune.ApplyOptions{Out: out, ScoresPath: scores, ScoresMeta: s.Meta, Read: read,
				Progress: func(done, total int64) {
					if bar != nil {
						bar.ChangeMax64(total)
						bar.Set64(done)
					}
				}})
			if bar != nil {
				bar.Finish()
			}
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			b, a := rep.ShapeBefore, rep.ShapeAfter
			fmt.Fprintf(w, "pruned %s -> %s in %v\n", modelDir, out, time.Since(start).Round(time.Millisecond))
			fmt.Fprintf(w, "  layers %d -> %d, hidden %d -> %d, heads %d -> %d (KV %d, head_dim %d), MLP %d -> %d\n",
				b.Layers, a.Layers, b.Hidden, a.Hidden, b.Heads, a.Heads, a.KVHeads, a.HeadDim, b.FFN, a.FFN)
			fmt.Fprintf(w, "  parameters %s -> %s (%.1f%%)\n", count(rep.ParamsBefore), count(rep.ParamsAfter), 100*float64(rep.ParamsAfter)/float64(rep.ParamsBefore))
			how := "through the page cache"
			if rep.DirectIO {
				how = "with direct I/O"
			}
			fmt.Fprintf(w, "  read %s of the %s source %s\n", human(rep.BytesRead), human(rep.SourceBytes), how)
			fmt.Fprintf(w, "  disk %s; kept indices in %s\n", human(model.DirSize(out)), filepath.Join(out, prune.ReportFile))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "source model directory")
	f.StringVar(&scores, "scores", "", "importance scores (`SCORES.safetensors` from minitron importance)")
	f.StringVar(&out, "out", "", "output directory (must not exist)")
	f.IntVar(&t.Hidden, "hidden-size", 0, "embedding channels to keep (0: all)")
	f.IntVar(&t.Heads, "num-attention-heads", 0, "query heads to keep, a multiple of the KV heads (0: all)")
	f.IntVar(&t.FFN, "intermediate-size", 0, "MLP neurons to keep per layer (0: all)")
	f.IntVar(&t.Layers, "num-layers", 0, "layers to keep, dropping the least important (0: all)")
	f.StringVar(&drop, "drop-layers", "", "comma-separated layers to drop, e.g. 3,4")
	f.StringVar(&t.DepthMetric, "depth-metric", "bi", "layer ranking for --num-layers: bi (Block Importance) or loss (LM loss without the layer)")
	f.IntVar(&t.Divisor, "divisor", 1, "the hidden size must be a multiple of this")
	f.StringVar(&read, "read", prune.ReadAuto, "how the source is read: auto (direct for a source of 256 MB or more unless most of it is in the page cache already), direct (bypass the page cache; Linux), buffered (through the page cache)")
	for _, n := range []string{"model", "scores", "out"} {
		cmd.MarkFlagRequired(n)
	}
	cmd.AddCommand(newPruneSearch())
	return cmd
}

func newPruneSearch() *cobra.Command {
	var modelDir, scores, out, dev string
	var datasets []string
	var target, tol, lr float64
	var steps, evalBatches, seqLen, microBatch int
	space := prune.PaperSpace()
	cmd := &cobra.Command{
		Use:   "search --model DIR --target-params N",
		Short: "List every homogeneous candidate shape within a parameter budget",
		Long: `search lists the shapes of the search space (by default the paper's:
layers 29-32, heads 24/32/48, MLP factor 2.5-4, hidden 2560-4608) that the
model can be pruned to and whose exact parameter count is within --tolerance
of --target-params, closest first. Counts come from the parameter table; no
model is built.

With --score-steps N, each candidate is then pruned (with --scores), distilled
from the source for N steps on --data, and validated on --eval-batches
batches of its validation split; the candidates are listed again ranked by
val ce (the held-out cross-entropy), lowest first (the paper's lightweight
retraining, which picks the architecture that recovers best). Each candidate works in its own
directory under --out, and search-results.json there records every finished
one: rerunning the command after an interruption skips those and resumes the
one in training from its checkpoint.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := model.LoadConfig(filepath.Join(modelDir, "config.json"))
			if err != nil {
				return err
			}
			cs, err := prune.Search(cfg, target, tol, space)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			total, _ := cfg.NumParams()
			fmt.Fprintf(w, "source: %s parameters; target %s ±%.0f%%: %d candidate(s)\n", count(total), count(int64(target)), 100*tol, len(cs))
			for _, c := range cs {
				fmt.Fprintf(w, "  %v\n", c)
			}
			if len(cs) == 0 {
				return fmt.Errorf("no candidate within the budget; widen --tolerance or the search space (--layers, --heads, --hidden, --mlp-factors)")
			}
			if steps <= 0 {
				return nil
			}
			if scores == "" || out == "" || len(datasets) == 0 {
				return fmt.Errorf("--score-steps needs --scores, --data and --out")
			}
			if evalBatches <= 0 {
				return fmt.Errorf("--score-steps ranks by val ce: give --eval-batches of at least 1")
			}
			s, err := importance.Load(scores)
			if err != nil {
				return err
			}
			dc := distill.Default()
			for _, d := range datasets {
				dc.Data.Datasets = append(dc.Data.Datasets, train.Dataset{Path: d, Weight: 1})
			}
			dc.Data.SeqLen, dc.Train.MicroBatch, dc.Train.Steps, dc.Eval.Batches = seqLen, microBatch, steps, evalBatches
			dc.Optimizer.LR, dc.Optimizer.MinLR, dc.Optimizer.Warmup = lr, lr/10, max(1, steps/20)
			dc.Checkpoint.Every, dc.Checkpoint.Keep = max(1, steps/4), 1
			be, err := openBackend(dev)
			if err != nil {
				return err
			}
			interrupt, stop := onInterrupt()
			defer stop()
			dc.Teacher = distill.Teacher{Model: modelDir}
			retrain := distill.Retrainer(dc, train.RunOptions{Backend: be, Interrupt: interrupt})
			ranked, err := prune.ScoreCandidates(cmd.Context(), cs, prune.ScoreOptions{Source: modelDir, Scores: s, ScoresPath: scores, Out: out,
				Retrain: retrain, Log: cmd.ErrOrStderr()})
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "ranked by val ce after %d distillation steps:\n", steps)
			for i, r := range ranked {
				fmt.Fprintf(w, "  %d. val ce %.4f  %v\n", i+1, r.ValLoss, r.Candidate)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "source model directory")
	f.Float64Var(&target, "target-params", 0, "parameter budget, e.g. 4.19e9")
	f.Float64Var(&tol, "tolerance", 0.05, "allowed relative deviation from the budget")
	f.IntSliceVar(&space.Layers, "layers", space.Layers, "candidate layer counts")
	f.IntSliceVar(&space.Heads, "heads", space.Heads, "candidate query head counts")
	f.IntSliceVar(&space.Hidden, "hidden", space.Hidden, "candidate hidden sizes")
	f.Var((*floatList)(&space.MLPFactors), "mlp-factors", "candidate MLP sizes as multiples of the hidden size")
	f.IntVar(&steps, "score-steps", 0, "distill each candidate this many steps and rank by val ce (0: only list)")
	f.StringVar(&scores, "scores", "", "with --score-steps: importance scores to prune with")
	f.StringArrayVar(&datasets, "data", nil, "with --score-steps: a prepared `DATASET` directory (repeatable; equal weights)")
	f.StringVar(&out, "out", "", "with --score-steps: working directory (one subdirectory per candidate)")
	f.IntVar(&seqLen, "seq-len", 4096, "with --score-steps: tokens per sequence")
	f.IntVar(&microBatch, "micro-batch", 8, "with --score-steps: sequences per step")
	f.Float64Var(&lr, "lr", 1e-4, "with --score-steps: peak learning rate (cosine to a tenth, short warmup)")
	f.IntVar(&evalBatches, "eval-batches", 16, "with --score-steps: validation batches after training")
	addDevice(cmd, &dev)
	cmd.MarkFlagRequired("model")
	cmd.MarkFlagRequired("target-params")
	return cmd
}

// floatList is a comma-separated list of numbers as a flag value.
type floatList []float64

func (l *floatList) String() string {
	var s []string
	for _, x := range *l {
		s = append(s, strconv.FormatFloat(x, 'g', -1, 64))
	}
	return "[" + strings.Join(s, ",") + "]"
}

func (l *floatList) Set(v string) error {
	var out []float64
	for _, f := range strings.Split(strings.Trim(v, "[]"), ",") {
		x, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", f)
		}
		out = append(out, x)
	}
	*l = out
	return nil
}

func (l *floatList) Type() string { return "numbers" }
