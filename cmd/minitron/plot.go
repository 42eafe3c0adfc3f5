package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/plots"
	"github.com/minitron/minitron/train"
)

func newPlot() *cobra.Command {
	var out, x string
	var noVal, valOnly bool
	cmd := &cobra.Command{
		Use:   "plot RUN_DIR... -o loss.png",
		Short: "Draw the loss and held-out cross-entropy curves of one or several runs",
		Long: `plot reads metrics.jsonl of each run directory (from train or distill) and
draws, for every run on one chart, against steps or tokens (--x tokens):

  loss     (solid) the objective optimized at each step: the cross-entropy
           of a training run, the KL of a distillation run (its kl)
  val ce   (dashed) the model's cross-entropy on the held-out split at each
           validation

Every run's val ce is the same quantity, so --validation-only compares
distilled and trained runs on one scale.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if x != "steps" && x != "tokens" {
				return fmt.Errorf("--x %q: use steps or tokens", x)
			}
			if noVal && valOnly {
				return fmt.Errorf("--no-validation and --validation-only leave nothing to draw")
			}
			var series []plots.Series
			for i, dir := range args {
				ms, err := train.ReadMetrics(dir)
				if err != nil {
					return err
				}
				tr := plots.Series{Name: filepath.Base(dir) + " loss", Color: i}
				va := plots.Series{Name: filepath.Base(dir) + " val ce", Dashed: true, Color: i}
				for _, m := range ms {
					xv := float64(m.Step)
					if x == "tokens" {
						xv = float64(m.Tokens)
					}
					if m.Loss != nil {
						tr.X, tr.Y = append(tr.X, xv), append(tr.Y, *m.Loss)
					}
					if m.ValCE != nil {
						va.X, va.Y = append(va.X, xv), append(va.Y, *m.ValCE)
					}
				}
				if !valOnly {
					series = append(series, tr)
				}
				if !noVal {
					series = append(series, va)
				}
			}
			title, y := "loss and val ce", "nats per token"
			if valOnly {
				title = "val ce (cross-entropy on the held-out split)"
			}
			if err := plots.Curves(out, title, x, y, series); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "loss.png", "PNG file to write")
	cmd.Flags().StringVar(&x, "x", "steps", "x axis: steps or tokens")
	cmd.Flags().BoolVar(&noVal, "no-validation", false, "omit the val ce curves")
	cmd.Flags().BoolVar(&valOnly, "validation-only", false, "draw only the val ce curves")
	return cmd
}
