// Command minitron derives compact language models from large ones by
// structured pruning and knowledge distillation, and runs, evaluates,
// exports and samples them.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// gcPercent is the collector's default here (GOGC in the environment
// wins). A run's heap is mostly tensors allocated once and its garbage per
// step is small; Go's own default of 100 lets the heap grow to twice what
// is live before collecting, which made the default recipe's peak RSS
// 1.3 GB where 25 keeps it under 0.9 GB at the same speed (docs/perf.md).
const gcPercent = 25

// setGC applies gcPercent unless the environment sets GOGC.
func setGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

func main() {
	setGC(os.Getenv)
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go onSignals(sig, cancel, func() {
		fmt.Fprintln(os.Stderr, "\nminitron: aborted")
		os.Exit(130)
	})
	root := newRoot()
	err := root.ExecuteContext(ctx)
	cancel()
	closeBackends()
	if err != nil {
		fmt.Fprintln(os.Stderr, "minitron:", err)
		os.Exit(1)
	}
}

// onSignals cancels the command's context at the first SIGINT or SIGTERM
// (long jobs then stop cleanly: a checkpoint, the requests in flight) and
// aborts at the second.
func onSignals(sig <-chan os.Signal, cancel context.CancelFunc, abort func()) {
	if _, ok := <-sig; !ok {
		return
	}
	cancel()
	if _, ok := <-sig; ok {
		abort()
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "minitron",
		Short: "Prune and distill large language models into compact ones",
		Long: `minitron derives compact language models from large ones the way NVIDIA
derived Minitron-4B from Nemotron-4 15B: score attention heads, MLP neurons,
embedding channels and layers on calibration data, slice the weights to a
smaller shape, and retrain the student by distillation from the teacher.

Models are Hugging Face checkpoint directories (config.json + safetensors);
NemotronForCausalLM and LlamaForCausalLM are supported.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version(),
	}
	root.SetVersionTemplate("minitron {{.Version}}\n")
	root.AddCommand(newInspect(), newLogits(), newSample(), newBench(), newTokenize(), newData(), newTrain(), newImportance(), newPrune(), newPlot(), newDistill(), newRun(), newExport(), newConvert(), newServe(), newEval())
	root.AddCommand(newDevices())
	return root
}

// groupOnly makes a command that only groups subcommands fail on an
// unknown subcommand (cobra would print its help and succeed).
func groupOnly(cmd *cobra.Command) {
	cmd.Args = cobra.ArbitraryArgs
	cmd.SuggestionsMinimumDistance = 2
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return fmt.Errorf("%s (see %s --help)", msg, cmd.CommandPath())
	}
}

// version describes the build: the module version, the commit it was built
// from, the Go version and the cgo setting.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(no build information)"
	}
	set := map[string]string{}
	for _, s := range bi.Settings {
		set[s.Key] = s.Value
	}
	commit := "unknown (built without version control information)"
	if c := set["vcs.revision"]; c != "" {
		commit = c
		if set["vcs.modified"] == "true" {
			commit += " with local changes"
		}
		if t := set["vcs.time"]; t != "" {
			commit += " of " + t
		}
	}
	cgo := set["CGO_ENABLED"]
	if cgo == "" {
		cgo = "unset"
	}
	return fmt.Sprintf("%s\ncommit %s\n%s %s/%s, CGO_ENABLED=%s", bi.Main.Version, commit, bi.GoVersion, runtime.GOOS, runtime.GOARCH, cgo)
}
