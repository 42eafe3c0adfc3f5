// Command minitron derives compact language models from large ones by
// structured pruning and knowledge distillation, and runs, evaluates,
// exports and samples them.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	err := root.ExecuteContext(ctx)
	closeBackends()
	if err != nil {
		fmt.Fprintln(os.Stderr, "minitron:", err)
		os.Exit(1)
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
	}
	root.AddCommand(newInspect(), newLogits(), newSample(), newBench(), newTokenize(), newData(), newTrain(), newImportance(), newPrune(), newPlot(), newDistill(), newRun(), newExport(), newConvert(), newServe(), newEval())
	root.AddCommand(newDevices())
	return root
}
