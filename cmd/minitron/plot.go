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
		Short: "Draw the loss curves of one or several runs",
		Long: `plot reads metrics.jsonl of each run directory (from train or distill) and
draws the training loss (solid) and validation loss (dashed) of every run on
one chart, against steps or tokens (--x tokens), so runs compare at a glance.
A distillation run's training loss is its distillation loss (KL), not a
cross-entropy; its validation loss is the student's cross-entropy, so
--validation-only compares distilled and trained runs on one scale.`,
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
				tr := plots.Series{Name: filepath.Base(dir) + " train", Color: i}
				va := plots.Series{Name: filepath.Base(dir) + " validation", Dashed: true, Color: i}
				for _, m := range ms {
					xv := float64(m.Step)
					if x == "tokens" {
						xv = float64(m.Tokens)
					}
					if m.Loss != nil {
						tr.X, tr.Y = append(tr.X, xv), append(tr.Y, *m.Loss)
					}
					if m.ValLoss != nil {
						va.X, va.Y = append(va.X, xv), append(va.Y, *m.ValLoss)
					}
				}
				if !valOnly {
					series = append(series, tr)
				}
				if !noVal {
					series = append(series, va)
				}
			}
			if err := plots.Curves(out, "loss", x, "cross-entropy (nats/token)", series); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "loss.png", "PNG file to write")
	cmd.Flags().StringVar(&x, "x", "steps", "x axis: steps or tokens")
	cmd.Flags().BoolVar(&noVal, "no-validation", false, "omit the validation curves")
	cmd.Flags().BoolVar(&valOnly, "validation-only", false, "draw only the validation curves")
	return cmd
}
