package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/eval"
	"github.com/minitron/minitron/importance"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/prune"
	"github.com/minitron/minitron/train"
)

func newPrune() *cobra.Command {
	var modelDir, scores, out, read string
	var t prune.Targets
	var drop string
	var randomSeed uint64
	cmd := &cobra.Command{
		Use:   "prune --model DIR --scores SCORES.safetensors --hidden-size H --num-attention-heads A --intermediate-size F --out DIR2",
		Short: "Slice a model to a smaller shape using importance scores",
		Long: `prune keeps the most important embedding channels (globally), query heads
(ranked inside each KV group, the same number kept per group, KV groups
kept), MLP neurons (per layer) and layers (--num-layers drops the least
important by --depth-metric: single layers by bi or loss, or one contiguous
block by block-bi; --drop-layers names them, e.g. 16-30). Kept indices stay
in ascending order. Every target is checked before any work.

The output is a standard Hugging Face directory: config.json with an explicit
head_dim, safetensors in the source dtype (sharded), the tokenizer files, and
prune-report.json with what was kept and the parameter counts. Tensors stream
one at a time, a block of rows at a time, and only the kept rows are read
(many reads in flight), so a model larger than RAM prunes in little memory.
A large source that is not already in the page cache is read with direct
I/O (see --read). A failed prune leaves no output directory.

--random-seed N keeps random channels, heads (the same number per KV group)
and neurons at the same shape instead: the baseline that measures what the
importance scores are worth.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if t.DropLayers, err = layerList(drop); err != nil {
				return err
			}
			cfg, err := model.LoadConfig(filepath.Join(modelDir, "config.json"))
			if err != nil {
				return err
			}
			var s *importance.Scores
			switch {
			case randomSeed != 0 && scores != "":
				return fmt.Errorf("give --scores or --random-seed, not both")
			case randomSeed != 0:
				s = prune.RandomScores(cfg, randomSeed)
			case scores == "":
				return fmt.Errorf("give --scores (from minitron importance) or --random-seed")
			default:
				if s, err = importance.Load(scores); err != nil {
					return err
				}
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
	f.StringVar(&drop, "drop-layers", "", "layers to drop (0-based), comma-separated, with ranges: 3,4 or 16-30")
	f.StringVar(&t.DepthMetric, "depth-metric", "bi", "layer ranking for --num-layers: bi (Block Importance of single layers), loss (LM loss without the layer) or block-bi (drop the contiguous block of least Block Importance)")
	f.IntVar(&t.Divisor, "divisor", 1, "the hidden size must be a multiple of this")
	f.Uint64Var(&randomSeed, "random-seed", 0, "keep random channels, heads and neurons drawn with this seed instead of the most important (a baseline; no --scores)")
	f.StringVar(&read, "read", prune.ReadAuto, "how the source is read: auto (direct for a source of 256 MB or more unless most of it is in the page cache already), direct (bypass the page cache; Linux), buffered (through the page cache)")
	for _, n := range []string{"model", "out"} {
		cmd.MarkFlagRequired(n)
	}
	cmd.AddCommand(newPruneSearch())
	return cmd
}

// layerList parses "3,4,16-30" into layer numbers.
func layerList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err != nil || b < a {
			return nil, fmt.Errorf("--drop-layers: %q is not a layer number or a range like 16-30", f)
		}
		for l := a; l <= b; l++ {
			out = append(out, l)
		}
	}
	return out, nil
}

func newPruneSearch() *cobra.Command {
	var modelDir, scores, out, dev, metric string
	var datasets []string
	var target, tol, lr, valFraction float64
	var steps, evalBatches, seqLen, microBatch, block, metricSeqs, metricLimit int
	space := prune.PaperSpace()
	cmd := &cobra.Command{
		Use:   "search --model DIR (--target-params N | --drop-block N)",
		Short: "List candidate shapes within a parameter budget, or blocks of layers to drop; rank them by a short distillation",
		Long: `search lists the shapes of the search space (by default the paper's:
layers 29-32, heads 24/32/48, MLP factor 2.5-4, hidden 2560-4608) that the
model can be pruned to and whose exact parameter count is within --tolerance
of --target-params, closest first. Counts come from the parameter table; no
model is built. With --drop-block N the candidates are instead every
contiguous block of N layers to drop, width kept (the depth pruning of
arXiv:2408.11796 §2, which picks the block by a downstream score).

With --score-steps N, each candidate is then pruned (with --scores), distilled
from the source for N steps on --data, and scored: by default its val ce (the
held-out cross-entropy) on --eval-batches batches of the validation split,
lowest first (the
paper's lightweight retraining, which picks the architecture that recovers
best); --metric TASK=PATH scores a benchmark's accuracy as minitron eval does
(e.g. winogrande=PATH, the score 2408.11796 ranks blocks by), and --metric
ITEMS.jsonl a generic multiple-choice file, highest first (--metric-limit
takes the first documents only); --metric val-loss with --score-steps 0
scores the pruned models as they are (--metric-sequences validation
sequences). Each candidate works in its own
directory under --out, and search-results.json there records every finished
one: rerunning the command after an interruption skips those and resumes the
one in training from its checkpoint.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := model.LoadConfig(filepath.Join(modelDir, "config.json"))
			if err != nil {
				return err
			}
			var cs []prune.Candidate
			w := cmd.OutOrStdout()
			total, _ := cfg.NumParams()
			if block > 0 {
				if cs, err = prune.BlockCandidates(cfg, block); err != nil {
					return err
				}
				fmt.Fprintf(w, "source: %s parameters, %d layers; every contiguous block of %d: %d candidate(s)\n", count(total), cfg.NumLayers, block, len(cs))
			} else {
				if target <= 0 {
					return fmt.Errorf("give --target-params (a parameter budget) or --drop-block (a number of layers)")
				}
				if cs, err = prune.Search(cfg, target, tol, space); err != nil {
					return err
				}
				fmt.Fprintf(w, "source: %s parameters; target %s ±%.0f%%: %d candidate(s)\n", count(total), count(int64(target)), 100*tol, len(cs))
			}
			for _, c := range cs {
				fmt.Fprintf(w, "  %v\n", c)
			}
			if len(cs) == 0 {
				return fmt.Errorf("no candidate within the budget; widen --tolerance or the search space (--layers, --heads, --hidden, --mlp-factors)")
			}
			scoring := steps > 0 || cmd.Flags().Changed("metric")
			if !scoring {
				return nil
			}
			if scores == "" || out == "" || len(datasets) == 0 {
				return fmt.Errorf("--score-steps and --metric need --scores, --data and --out")
			}
			var m *prune.Metric
			switch {
			case metric == "val-loss" && steps > 0:
			case metric == "val-loss":
				m = prune.ValLoss(datasets[0], seqLen, valFraction, metricSeqs)
			default:
				name, path, err := eval.ParseTaskArg(metric)
				if err != nil {
					return fmt.Errorf("--metric %q: %w", metric, err)
				}
				m = prune.Task(name, path, modelDir, -1, metricLimit)
			}
			if m == nil && evalBatches <= 0 {
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
			dc.Model.Tokenizer = modelDir
			dc.Data.SeqLen, dc.Data.ValFraction, dc.Train.MicroBatch, dc.Train.Steps, dc.Eval.Batches = seqLen, valFraction, microBatch, steps, evalBatches
			dc.Optimizer.LR, dc.Optimizer.MinLR, dc.Optimizer.Warmup = lr, lr/10, max(1, steps/20)
			dc.Checkpoint.Every, dc.Checkpoint.Keep = max(1, steps/4), 1
			be, err := openBackend(dev)
			if err != nil {
				return err
			}
			interrupt, stop := onInterrupt()
			defer stop()
			dc.Teacher = distill.Teacher{Model: modelDir}
			var retrain func(ctx context.Context, modelDir, runDir string) (float64, error)
			if steps > 0 {
				retrain = distill.Retrainer(dc, train.RunOptions{Backend: be, Interrupt: interrupt})
			}
			ranked, err := prune.ScoreCandidates(cmd.Context(), cs, prune.ScoreOptions{Source: modelDir, Scores: s, ScoresPath: scores, Out: out,
				Retrain: retrain, Metric: m, Backend: be, Log: cmd.ErrOrStderr()})
			if err != nil {
				return err
			}
			name := ranked[0].Metric
			fmt.Fprintf(w, "ranked by %s after %d distillation steps:\n", name, steps)
			for i, r := range ranked {
				fmt.Fprintf(w, "  %d. %s %.4f  %v\n", i+1, name, r.Score, r.Candidate)
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
	f.IntVar(&steps, "score-steps", 0, "distill each candidate this many steps and rank them by --metric (0: only list, or with --metric score the pruned models as they are)")
	f.IntVar(&block, "drop-block", 0, "candidates: every contiguous block of this many layers to drop, width kept (instead of --target-params)")
	f.StringVar(&metric, "metric", "val-loss", "with scoring: val-loss (val ce, the held-out cross-entropy, lowest first), TASK=PATH (a benchmark of minitron eval, e.g. winogrande=PATH) or ITEMS.jsonl (generic multiple choice), accuracy highest first")
	f.IntVar(&metricLimit, "metric-limit", 0, "with a benchmark metric: score its first N documents only (0: all)")
	f.IntVar(&metricSeqs, "metric-sequences", 256, "with --metric val-loss and --score-steps 0: validation sequences scored (0: all)")
	f.Float64Var(&valFraction, "val-fraction", 0.01, "with scoring: the validation fraction of --data (as in training)")
	f.StringVar(&scores, "scores", "", "with --score-steps: importance scores to prune with")
	f.StringArrayVar(&datasets, "data", nil, "with --score-steps: a prepared `DATASET` directory (repeatable; equal weights)")
	f.StringVar(&out, "out", "", "with --score-steps: working directory (one subdirectory per candidate)")
	f.IntVar(&seqLen, "seq-len", 4096, "with --score-steps: tokens per sequence")
	f.IntVar(&microBatch, "micro-batch", 8, "with --score-steps: sequences per step")
	f.Float64Var(&lr, "lr", 1e-4, "with --score-steps: peak learning rate (cosine to a tenth, short warmup)")
	f.IntVar(&evalBatches, "eval-batches", 16, "with --score-steps: validation batches after training")
	addDevice(cmd, &dev)
	cmd.MarkFlagRequired("model")
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
