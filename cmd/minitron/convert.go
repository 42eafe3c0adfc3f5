package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/export"
	"github.com/minitron/minitron/model"
)

func newConvert() *cobra.Command {
	var from, out string
	var shardGB float64
	cmd := &cobra.Command{
		Use:   "convert --from DIR --out DIR2",
		Short: "Convert a PyTorch pytorch_model.bin checkpoint (sharded too) to safetensors",
		Long: `convert reads a Hugging Face directory whose weights are PyTorch zip
checkpoints (pytorch_model.bin, or shards listed in
pytorch_model.bin.index.json) and writes DIR2 with the same weights as
safetensors, plus config.json and the tokenizer files. Each tensor is
streamed from the archive in its own dtype (bf16 stays bf16); the model is
never held in memory. The pickles are read by a restricted reader that only
rebuilds tensors: a file that references anything else (which PyTorch would
execute on load) is refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			start := time.Now()
			n, err := export.ConvertTorch(from, out, int64(shardGB*(1<<30)))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "converted %d tensors (%s) into %s in %v\n", n, human(model.DirSize(out)), out, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "directory with config.json and pytorch_model.bin (or its shards)")
	cmd.Flags().StringVar(&out, "out", "", "output directory (must not exist)")
	cmd.Flags().Float64Var(&shardGB, "shard-gb", 5, "maximum safetensors shard size in GB")
	cmd.MarkFlagRequired("from")
	cmd.MarkFlagRequired("out")
	return cmd
}
