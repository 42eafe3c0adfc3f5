package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/importance"
	"github.com/minitron/minitron/plots"
	"github.com/minitron/minitron/prune"
)

func newImportance() *cobra.Command {
	var (
		modelDir, calib, out, dev string
		samples, seqLen, batch    int
		seed                      uint64
		valFraction               float64
		opt                       importance.Options
	)
	cmd := &cobra.Command{
		Use:   "importance --model DIR --calib (FILE.safetensors | DATASET_DIR) --out SCORES.safetensors",
		Short: "Score heads, neurons, embedding channels and layers on calibration data",
		Long: `importance runs the model over calibration data and scores every attention
head (L2 norm of its slice of the o_proj input), MLP neuron (the down_proj
input; --neuron-site pre uses the up_proj output), embedding channel (outputs
of both norms of every layer, summed) and layer (Block Importance: 1 - cosine
of its input and output; with --depth also the LM loss with the layer removed).
Per-token values are aggregated over each sequence (--seq-agg) then over the
sequences (--batch-agg): mean, l2 or var; the default is Minitron's best,
mean over the sequence then L2 over the batch.

--calib is a safetensors file holding input_ids [N, T] (used as it is: every
row, full length), or a prepared dataset, from which --samples sequences of
--seq-len tokens are drawn with --seed (recorded in the scores' metadata);
with --val-fraction F they are drawn from its training split only (the
split training at --seq-len with that validation fraction uses), so the
scores never see validation text.
The scores go to a safetensors file for ` + "`minitron prune`" + `, so pruning to
another shape needs no new calibration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := opt.Agg.Validate(); err != nil {
				return err
			}
			ids, n, T, meta, err := calibration(calib, samples, seqLen, seed, valFraction)
			if err != nil {
				return err
			}
			be, err := openBackend(dev)
			if err != nil {
				return err
			}
			m, err := loadModel(modelDir, be)
			if err != nil {
				return err
			}
			opt.BatchSize = batch
			bar := newBar(0, "scoring")
			opt.Progress = func(done, total int) {
				if bar != nil {
					bar.ChangeMax64(int64(total))
					bar.Set(done)
				}
			}
			s, err := importance.Estimate(cmd.Context(), m, ids, n, T, opt)
			if bar != nil {
				bar.Finish()
			}
			if err != nil {
				return err
			}
			s.Meta["model"] = modelDir
			for k, v := range meta {
				s.Meta[k] = v
			}
			if err := s.Save(out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "scored %d sequences of %d tokens (calibration loss %.4f) into %s\n", n, T, s.CalibrationLoss, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "model directory")
	f.StringVar(&calib, "calib", "", "calibration data: a safetensors file with input_ids, or a prepared dataset directory")
	f.StringVar(&out, "out", "", "scores file to write (safetensors)")
	f.IntVar(&samples, "samples", 1024, "sequences to draw from a dataset (the paper uses 1024)")
	f.IntVar(&seqLen, "seq-len", 4096, "tokens per sequence drawn from a dataset")
	f.Uint64Var(&seed, "seed", 0, "seed of the draw from a dataset")
	f.Float64Var(&valFraction, "val-fraction", 0, "draw only from the training split of a dataset with this validation fraction (0: the whole dataset)")
	f.IntVar(&batch, "batch-size", 0, "sequences per forward pass (default: about 8k tokens)")
	f.StringVar(&opt.Agg.Seq, "seq-agg", "mean", "aggregation over a sequence's tokens: mean, l2 or var")
	f.StringVar(&opt.Agg.Batch, "batch-agg", "l2", "aggregation over sequences: mean, l2 or var")
	f.StringVar(&opt.NeuronSite, "neuron-site", "post", "neuron activations: post (down_proj input) or pre (up_proj output)")
	f.BoolVar(&opt.Depth, "depth", true, "also score layers by the LM loss without them (one more pass per layer)")
	addDevice(cmd, &dev)
	for _, n := range []string{"model", "calib", "out"} {
		cmd.MarkFlagRequired(n)
	}
	cmd.AddCommand(newImportanceShow())
	return cmd
}

// calibration reads calibration ids from a safetensors file or draws them
// from a dataset; meta records where they came from.
func calibration(path string, samples, seqLen int, seed uint64, valFraction float64) ([]int32, int, int, map[string]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, 0, 0, nil, fmt.Errorf("--calib: %w", err)
	}
	if !st.IsDir() {
		ids, n, T, err := readInputIDs(path)
		return ids, n, T, map[string]string{"calibration_source": path}, err
	}
	ds, err := data.Open(path)
	if err != nil {
		return nil, 0, 0, nil, err
	}
	defer ds.Close()
	var c *data.CalibrationSample
	split := "all"
	if valFraction > 0 {
		var train data.Split
		if train, _, err = ds.Split(seqLen, valFraction); err != nil {
			return nil, 0, 0, nil, err
		}
		c, err = data.CalibrationFrom(train, samples, seqLen, seed)
		split = fmt.Sprintf("train (val_fraction %v, sequences of %d tokens)", valFraction, seqLen)
	} else {
		c, err = data.Calibration(ds, samples, seqLen, seed)
	}
	if err != nil {
		return nil, 0, 0, nil, err
	}
	meta := c.Meta()
	meta["calibration_source"], meta["calibration_split"] = path, split
	return c.IDs, samples, seqLen, meta, nil
}

func newImportanceShow() *cobra.Command {
	var png string
	cmd := &cobra.Command{
		Use:   "show SCORES.safetensors",
		Short: "Summarize a scores file; --png draws heatmaps of head and neuron importance per layer",
		Long: `show prints a scores file written by importance (or by a recipe's
importance stage): its metadata (model, calibration source and draw,
aggregation), a table per layer of Block Importance, the LM loss with the
layer removed (when scored with --depth), the mean and largest head score
and the mean neuron score, the most important embedding channels, and the
calibration loss. --png draws heatmaps of head and neuron importance, one
row per layer.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := importance.Load(args[0])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			var keys []string
			for k := range s.Meta {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				v := s.Meta[k]
				if len(v) > 100 {
					v = v[:97] + "..."
				}
				fmt.Fprintf(w, "%-28s %s\n", k, v)
			}
			fmt.Fprintf(w, "\n%5s %10s %10s %10s %10s %10s\n", "layer", "BI", "loss w/o", "heads", "head max", "neurons")
			for l := range s.Head {
				lw := "-"
				if s.LayerLossWithout != nil {
					lw = fmt.Sprintf("%.4f", s.LayerLossWithout[l])
				}
				fmt.Fprintf(w, "%5d %10.4f %10s %10.4f %10.4f %10.4f\n", l, s.LayerBI[l], lw, mean32(s.Head[l]), max32(s.Head[l]), mean32(s.Neuron[l]))
			}
			order := make([]int, len(s.Embedding))
			for i := range order {
				order[i] = i
			}
			sort.Slice(order, func(a, b int) bool { return s.Embedding[order[a]] > s.Embedding[order[b]] })
			var top []string
			for _, i := range order[:min(8, len(order))] {
				top = append(top, fmt.Sprintf("%d (%.3g)", i, s.Embedding[i]))
			}
			fmt.Fprintf(w, "\nembedding channels: %d, most important: %s\n", len(s.Embedding), strings.Join(top, ", "))
			if s.BlockBI != nil {
				fmt.Fprintf(w, "\nleast important contiguous block of n layers (Block Importance; prune --depth-metric block-bi):\n")
				for n := 1; n < len(s.BlockBI); n++ {
					best, _ := prune.LeastBlock(s, n)
					fmt.Fprintf(w, "  %2d: layers %d-%d (%.4f)\n", n, best, best+n-1, s.BlockBI[best][n-1])
				}
			}
			fmt.Fprintf(w, "calibration loss: %.4f\n", s.CalibrationLoss)
			if png != "" {
				if err := plots.Heatmaps(png, []string{"head importance", "neuron importance"}, [][][]float32{s.Head, s.Neuron}); err != nil {
					return err
				}
				fmt.Fprintf(w, "heatmaps written to %s\n", png)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&png, "png", "", "write heatmaps of head and neuron importance per layer to this PNG file")
	return cmd
}

func mean32(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x)
	}
	return s / float64(len(v))
}

func max32(v []float32) float64 {
	m := float64(v[0])
	for _, x := range v {
		m = max(m, float64(x))
	}
	return m
}
