package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/generate"
	"github.com/minitron/minitron/tokenizer"
)

func newSample() *cobra.Command {
	var (
		modelDir, tokPath, prompt, promptIDs, dev string
		opt                                       generate.Options
		printIDs, ignoreEOS, allowLong            bool
	)
	cmd := &cobra.Command{
		Use:   "sample --model DIR (--prompt TEXT | --prompt-ids 1,2,3)",
		Short: "Generate a continuation of a prompt",
		Long: `sample continues a prompt with the model, streaming tokens as they are made.
--temperature 0 decodes greedily; otherwise tokens are drawn at that
temperature from the top-k / top-p candidates with a seeded generator, so the
same seed gives the same text. Decoding stops at an end-of-sequence token
(unless --ignore-eos) or after --max-new-tokens. The prompt and the new
tokens together stay within the model's context (max_position_embeddings):
--max-new-tokens is cut to fit, with a note, and a longer prompt is
refused, unless --allow-long-context. Tokens per second go to stderr at the
end.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (prompt == "") == (promptIDs == "") {
				return fmt.Errorf("give exactly one of --prompt TEXT or --prompt-ids 1,2,3")
			}
			if err := opt.Validate(); err != nil {
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
			var ids []int32
			var tok tokenizer.Tokenizer
			if promptIDs != "" {
				if ids, err = parseIDs(promptIDs); err != nil {
					return fmt.Errorf("--prompt-ids: %w", err)
				}
			} else {
				src := modelDir
				if tokPath != "" {
					src = tokPath
				}
				if tok, err = openTokenizer(src); err != nil {
					return err
				}
				if ids = tokenizer.EncodePrompt(tok, prompt); len(ids) == 0 {
					return fmt.Errorf("the prompt encodes to no tokens")
				}
			}
			if n := len(ids) + opt.MaxNewTokens; n > m.Config.MaxPositions && !allowLong {
				if len(ids) >= m.Config.MaxPositions {
					return fmt.Errorf("the prompt has %d tokens; the model's context is %d (max_position_embeddings); shorten it or pass --allow-long-context", len(ids), m.Config.MaxPositions)
				}
				fit := m.Config.MaxPositions - len(ids)
				fmt.Fprintf(os.Stderr, "note: --max-new-tokens %d cut to %d: the prompt's %d tokens and the new ones fill the model's context of %d (--allow-long-context to go past it)\n",
					opt.MaxNewTokens, fit, len(ids), m.Config.MaxPositions)
				opt.MaxNewTokens = fit
			}
			if !ignoreEOS {
				if opt.Stop, err = generate.StopTokens(modelDir, m.Config.EOS); err != nil {
					return err
				}
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			var stream *generate.TextStream
			if !printIDs && tok != nil {
				stream = generate.NewTextStream(tok, ids, nil)
				fmt.Fprint(out, prompt)
				out.Flush()
				opt.OnToken = func(_ int, t int32) error {
					fmt.Fprint(out, stream.Add(t))
					return out.Flush()
				}
			}
			start := time.Now()
			res, err := generate.Generate(cmd.Context(), m, [][]int32{ids}, opt)
			if err != nil {
				return err
			}
			switch {
			case printIDs || tok == nil:
				var parts []string
				for _, t := range append(ids, res.Tokens[0]...) {
					parts = append(parts, strconv.Itoa(int(t)))
				}
				fmt.Fprintln(out, strings.Join(parts, " "))
			default:
				fmt.Fprintln(out, stream.Flush())
			}
			out.Flush()
			rate := float64(res.NewTokens) / res.Decode.Seconds()
			if res.NewTokens <= 1 || res.Decode == 0 {
				rate = 0
			}
			fmt.Fprintf(os.Stderr, "%d prompt tokens in %v (%.0f tok/s), %d new tokens in %v (%.1f tok/s), finish: %s, total %v\n",
				res.PromptTokens, res.Prefill.Round(time.Millisecond), float64(res.PromptTokens)/res.Prefill.Seconds(),
				res.NewTokens, res.Decode.Round(time.Millisecond), rate, res.Finish[0], time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "checkpoint directory")
	f.StringVar(&prompt, "prompt", "", "prompt text (tokenized with the model's tokenizer)")
	f.StringVar(&tokPath, "tokenizer", "", "tokenizer file or directory, when the model directory has none")
	f.StringVar(&promptIDs, "prompt-ids", "", "prompt as comma- or space-separated token ids")
	f.IntVar(&opt.MaxNewTokens, "max-new-tokens", 64, "maximum number of tokens to generate")
	f.Float64Var(&opt.Temperature, "temperature", 0.8, "sampling temperature; 0 decodes greedily")
	f.IntVar(&opt.TopK, "top-k", 0, "sample among the K most likely tokens (0: all)")
	f.Float64Var(&opt.TopP, "top-p", 1, "sample among the most likely tokens holding this much probability (1: all)")
	f.Uint64Var(&opt.Seed, "seed", 0, "random seed; the same seed gives the same output")
	f.BoolVar(&printIDs, "ids", false, "print the whole id sequence (prompt then generated) on one line instead of text")
	f.BoolVar(&ignoreEOS, "ignore-eos", false, "keep generating past end-of-sequence tokens")
	f.BoolVar(&allowLong, "allow-long-context", false, "generate past the model's context (max_position_embeddings)")
	addDevice(cmd, &dev)
	cmd.MarkFlagRequired("model")
	return cmd
}

// parseIDs reads "1,2,3" or "1 2 3".
func parseIDs(s string) ([]int32, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	if len(fields) == 0 {
		return nil, fmt.Errorf("no token ids in %q", s)
	}
	ids := make([]int32, len(fields))
	for i, f := range fields {
		v, err := strconv.ParseInt(f, 10, 32)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("%q is not a token id", f)
		}
		ids[i] = int32(v)
	}
	return ids, nil
}
