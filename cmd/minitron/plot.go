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
	var noVal bool
	cmd := &cobra.Command{
		Use:   "plot RUN_DIR... -o loss.png",
		Short: "Draw the loss curves of one or several runs",
		Long: `plot reads metrics.jsonl of each run directory (from train or distill) and
draws the training loss (solid) and validation loss (dashed) of every run on
one chart, against steps or tokens (--x tokens), so runs compare at a glance.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if x != "steps" && x != "tokens" {
				return fmt.Errorf("--x %q: use steps or tokens", x)
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
				series = append(series, tr)
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
	return cmd
}
