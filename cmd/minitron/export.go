package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/export"
	"github.com/minitron/minitron/model"
)

func newExport() *cobra.Command {
	var modelDir, format, out, dtype string
	var shardGB float64
	cmd := &cobra.Command{
		Use:   "export --model DIR --format hf|gguf --out PATH [--dtype bf16|f16|f32|q8_0]",
		Short: "Write a model for serving stacks: Hugging Face directory or GGUF (llama.cpp, ollama)",
		Long: `export writes the model in DIR in a format other tools load:

  hf    a Hugging Face directory: config.json that transformers 4.44+ and 5
        read (explicit head_dim, Nemotron's partial_rotary_factor), sharded
        safetensors with an index, tokenizer files (tokenizer.json generated
        from a SentencePiece BPE model when missing), generation_config.json.
        --dtype bf16, f16 or f32.
  gguf  one GGUF v3 file for llama.cpp and ollama (architectures nemotron and
        llama): llama.cpp's tensor names, Nemotron's LayerNorm1P weights with
        the +1 folded in, Llama's Q/K rows permuted for its rotary layout,
        rope dimension count and key/value lengths, the SentencePiece
        vocabulary with scores and token types. --dtype f32, f16, bf16 or
        q8_0 (matrices; vectors stay f32; under q8_0 a matrix whose rows are
        not blocks of 32 stays f16, with a warning). Byte-level BPE
        tokenizer.json vocabularies (Llama 3, GPT-2, Qwen2) are written
        with their merges and llama.cpp's pre-tokenizer name. A shape
        llama.cpp will not load gets a warning.

--dtype defaults to the dtype the model's weights are stored in (bf16, f16
or f32). Nothing is left at --out if the export fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			start := time.Now()
			if dtype == "" {
				dt, err := export.SourceDType(modelDir)
				if err != nil {
					return err
				}
				dtype = strings.ToLower(dt.String())
				if dt != backend.F32 && dt != backend.BF16 && dt != backend.F16 {
					return fmt.Errorf("the weights of %s are %s; choose --dtype bf16, f16 or f32", modelDir, dt)
				}
			}
			switch format {
			case "hf":
				dt, err := backend.ParseDType(dtype)
				if err != nil || (dt != backend.BF16 && dt != backend.F16 && dt != backend.F32) {
					return fmt.Errorf("--dtype %q: the hf format takes bf16, f16 or f32", dtype)
				}
				if err := export.HF(modelDir, out, dt, int64(shardGB*(1<<30))); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s, %s) in %v\n", out, dtype, human(model.DirSize(out)), time.Since(start).Round(time.Millisecond))
			case "gguf":
				warn := func(msg string) { fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+msg) }
				if err := export.ExportGGUF(modelDir, out, export.GGUFOptions{DType: dtype, Warn: warn}); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s) in %v\n", out, dtype, time.Since(start).Round(time.Millisecond))
			default:
				return fmt.Errorf("--format %q: use hf or gguf", format)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "model directory")
	f.StringVar(&format, "format", "hf", "hf or gguf")
	f.StringVar(&out, "out", "", "output directory (hf) or file (gguf)")
	f.StringVar(&dtype, "dtype", "", "weight dtype: bf16, f16, f32, or q8_0 (gguf only) (default: the model's own)")
	f.Float64Var(&shardGB, "shard-gb", 5, "hf: maximum shard size in GB")
	cmd.MarkFlagRequired("model")
	cmd.MarkFlagRequired("out")
	return cmd
}
