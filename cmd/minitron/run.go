package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/minitron/minitron/recipes"
	"github.com/minitron/minitron/train"
)

func newRun() *cobra.Command {
	var from, until string
	var sets []string
	var plan, asJSON bool
	popt := recipes.DefaultPlanOptions
	cmd := &cobra.Command{
		Use:   "run RECIPE.yaml [--from STAGE] [--until STAGE] [--set key=value]... [--plan [--json]]",
		Short: "Run a recipe: data, teacher correction, importance, prune, distill (per step), eval, export",
		Long: `run takes a teacher through the whole pipeline a recipe describes:

  data                tokenize the datasets into Arrow shards (skipped when unchanged)
  teacher-correction  fine-tune the teacher on the distillation data (when enabled)
  importance          score heads, neurons, embedding channels and layers of the
                      step's source model on calibration data (training split)
  prune               slice the source to the step's shape
  distill             retrain the student against the step's teacher's logits
  eval                val ce (cross-entropy on the distillation's held-out
                      sequences) and benchmarks of teacher, pruned models and
                      students; samples from the final student
  export              write the final student as a Hugging Face directory (or GGUF)

A recipe with steps repeats importance, prune and distill per step, named
STEP/importance and so on; a step's source can be an earlier step's student
(Minitron-4B: 15B -> 8B shape, distill; that student -> 4B shape, distill from
the 15B).

Every stage records a checksum of its inputs; rerunning the recipe skips the
finished stages whose inputs did not change and resumes an interrupted
training stage from its last checkpoint. --from STAGE redoes that stage and
the ones after it; --until STAGE stops after it (a kind such as distill
names the stage when the recipe has only one of that kind). Relative paths
in the recipe are relative to the recipe file; $GOROOT is the Go
installation. Outputs go to the recipe's out directory (default runs/NAME).

--plan prints every stage in order (what it reads and writes, teacher,
target shape, parameter count, token budget, estimated FLOPs and GPU-hours
at --mfu of --peak-tflops) without reading any file the recipe names; the
teacher's shape comes from the recipe's teacher_arch. --json prints it as
{"stages": [{"name", "kind", "source", "teacher", "shape", "out", "tokens", ...}]}.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New(noRecipe(cmd))
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			setGOROOT()
			r, err := recipes.Load(args[0], sets)
			if err != nil {
				return err
			}
			if asJSON && !plan {
				return fmt.Errorf("--json goes with --plan")
			}
			if plan {
				p, err := r.Plan(popt)
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					return enc.Encode(p)
				}
				fmt.Fprint(cmd.OutOrStdout(), p.Text())
				return nil
			}
			be, err := openBackend(r.Device)
			if err != nil {
				return err
			}
			interrupt, stop := onInterrupt()
			defer stop()
			start := time.Now()
			bars := map[string]*progressbar.ProgressBar{}
			var stepBar *progressbar.ProgressBar
			var barStage string
			var p progress
			var pStage string
			lastLog := time.Now()
			opt := recipes.RunOptions{From: from, Until: until, Backend: be, Log: logWriter{}, Interrupt: interrupt,
				Progress: func(stage string, done, total int64) {
					if !interactive() {
						return
					}
					b, ok := bars[stage]
					if !ok {
						b = progressbar.NewOptions64(total, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetDescription(stage),
							progressbar.OptionSetWidth(25), progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(200*time.Millisecond))
						bars[stage] = b
					}
					b.ChangeMax64(total)
					b.Set64(done)
					if done >= total {
						b.Finish()
					}
				},
				OnStep: func(stage string, m train.Metric, total int) {
					if stage != pStage { // a new training stage: its own losses
						p, pStage = progress{}, stage
					}
					desc := stage + ": " + p.update(m)
					if interactive() {
						if stepBar == nil || barStage != stage {
							barStage = stage
							stepBar = progressbar.NewOptions(total, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetWidth(25),
								progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(200*time.Millisecond))
						}
						stepBar.Describe(desc)
						stepBar.Set(m.Step)
						if m.Step >= total {
							stepBar.Finish()
							fmt.Fprintln(os.Stderr)
						}
						return
					}
					if m.Loss != nil && (time.Since(lastLog) > 15*time.Second || m.Step == total) {
						fmt.Fprintf(os.Stderr, "step %d/%d  %s\n", m.Step, total, desc)
						lastLog = time.Now()
					}
				}}
			sum, err := recipes.Run(cmd.Context(), r, opt)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "\nrecipe %s finished in %v; outputs in %s\n\n", r.Name, time.Since(start).Round(time.Second), sum.Out)
			if sum.Report != nil {
				fmt.Fprint(w, sum.Report.Table())
				for _, s := range sum.Report.Samples {
					fmt.Fprintf(w, "\nsample from the student (prompt %q):\n%s\n", s.Prompt, indent(s.Text))
				}
				fmt.Fprintln(w)
			}
			last := len(r.StageNames()) - 1
			if until != "" {
				last, _ = r.StageIndex(until)
			}
			fmt.Fprintln(w, "outputs:")
			for _, o := range r.Outputs() {
				if i, err := r.StageIndex(o.Stage); err == nil && i <= last {
					fmt.Fprintf(w, "  %-60s %s\n", o.What, o.Path)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "redo this stage and those after it (a stage name, or a kind: "+strings.Join(recipes.Stages(), ", ")+")")
	f.StringVar(&until, "until", "", "stop after this stage")
	f.BoolVar(&plan, "plan", false, "print the stages, shapes, token budgets and compute estimates without reading any file the recipe names")
	f.BoolVar(&asJSON, "json", false, "with --plan: print the plan as JSON")
	f.Float64Var(&popt.MFU, "mfu", popt.MFU, "with --plan: model FLOPs utilization assumed for the GPU-hour estimates")
	f.Float64Var(&popt.PeakTFLOPs, "peak-tflops", popt.PeakTFLOPs, "with --plan: one GPU's dense bf16 peak in TFLOP/s (989: H100 SXM)")
	f.StringArrayVar(&sets, "set", nil, "override a recipe value: `key.path=value`, e.g. --set distill.train.steps=100 (repeatable)")
	return cmd
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ")
}

// setGOROOT sets $GOROOT, which recipes use to name the Go source tree as a
// corpus, from the go command when the environment does not set it.
func setGOROOT() {
	if _, ok := os.LookupEnv("GOROOT"); ok {
		return
	}
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if g := strings.TrimSpace(string(out)); g != "" {
			os.Setenv("GOROOT", g)
		}
	}
}

// noRecipe is the message of run without a recipe: its usage and the
// recipes that come with minitron.
func noRecipe(cmd *cobra.Command) string {
	var b strings.Builder
	fmt.Fprintf(&b, "run needs a recipe file\n\nUsage:\n  %s\n\nRecipes shipped in recipes/ of the minitron source:\n", cmd.UseLine())
	for _, r := range recipes.Shipped() {
		fmt.Fprintf(&b, "  %-34s %s\n", r.File, r.Summary)
	}
	fmt.Fprintf(&b, "\nStart with: minitron run recipes/tiny.yaml (see minitron run --help)")
	return b.String()
}
