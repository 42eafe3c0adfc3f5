package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/eval"
	"github.com/minitron/minitron/tokenizer"
)

func newEval() *cobra.Command {
	var modelDir, dataset, split, tokPath, dev string
	var tasks []string
	var seqLen, sequences, micro, limit, maxLen int
	var valFraction float64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "eval --model DIR (--data DATASET | --task FILE.jsonl...)",
		Short: "Measure a model: perplexity on a dataset, accuracy on multiple-choice tasks",
		Long: `eval measures the model in DIR.

With --data, the perplexity (and mean cross-entropy in nats per token) on
--sequences sequences of --seq-len tokens of a prepared dataset's --split:
val, the held-out part that training with the same --val-fraction and
--seq-len never saw (the default), train, or all.

With --task, the accuracy on multiple-choice items, one JSON object per line:
  {"context": "...", "choices": ["...", ...], "label": 0}
  {"ctx": "...", "endings": ["...", ...], "label": 0}          (HellaSwag)
  {"question": "...", "choices": ["...", ...], "answer": 0}    (MMLU-style)
Each choice is scored by the log-likelihood of its tokens after the context,
as lm-evaluation-harness does: acc picks the most likely choice, acc_norm the
most likely per byte. Bring the task files; nothing is downloaded.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (dataset == "") == (len(tasks) == 0) && !(dataset != "" && len(tasks) > 0) {
				return fmt.Errorf("give --data DATASET, --task FILE.jsonl, or both")
			}
			be, err := openBackend(dev)
			if err != nil {
				return err
			}
			m, err := loadModel(modelDir, be)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			out := map[string]any{"model": modelDir}
			if dataset != "" {
				ds, err := data.Open(dataset)
				if err != nil {
					return err
				}
				defer ds.Close()
				frac := valFraction
				if split == "all" {
					frac = 0
				}
				tr, val, err := ds.Split(seqLen, frac)
				if err != nil {
					return err
				}
				s := map[string]data.Split{"val": val, "train": tr, "all": tr}[split]
				if _, ok := map[string]bool{"val": true, "train": true, "all": true}[split]; !ok {
					return fmt.Errorf("--split %q: use val, train or all", split)
				}
				if s.Count == 0 {
					return fmt.Errorf("%s: the %s split has no sequences of %d tokens (lower --seq-len or change --val-fraction)", dataset, split, seqLen)
				}
				start := time.Now()
				r, err := eval.Perplexity(cmd.Context(), m, s, sequences, max(1, micro))
				if err != nil {
					return err
				}
				out["perplexity"] = map[string]any{"dataset": dataset, "split": split, "loss": r.Loss, "perplexity": r.Perplexity, "tokens": r.Tokens}
				if !asJSON {
					fmt.Fprintf(w, "%s (%s split): loss %.4f nats/token, perplexity %.2f over %d tokens (%v)\n",
						dataset, split, r.Loss, r.Perplexity, r.Tokens, time.Since(start).Round(time.Millisecond))
				}
			}
			if len(tasks) > 0 {
				var tok tokenizer.Tokenizer
				if tokPath == "" {
					tokPath = modelDir
				}
				if tok, err = tokenizer.Open(tokPath); err != nil {
					return err
				}
				results := map[string]any{}
				for _, path := range tasks {
					items, err := eval.ReadItemsFile(path)
					if err != nil {
						return err
					}
					if limit > 0 && len(items) > limit {
						items = items[:limit]
					}
					bar := newBar(int64(len(items)), "scoring "+filepath.Base(path))
					start := time.Now()
					r, err := eval.MultipleChoice(cmd.Context(), m, tok, items, maxLen, func(done, total int) {
						if bar != nil {
							bar.Set(done)
						}
					})
					if bar != nil {
						bar.Finish()
					}
					if err != nil {
						return fmt.Errorf("%s: %w", path, err)
					}
					name := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
					results[name] = map[string]any{"items": r.Items, "acc": r.Acc, "acc_norm": r.AccNorm}
					if !asJSON {
						fmt.Fprintf(w, "%s: acc %.4f, acc_norm %.4f on %d items (%v)\n", name, r.Acc, r.AccNorm, r.Items, time.Since(start).Round(time.Millisecond))
					}
				}
				out["tasks"] = results
			}
			if asJSON {
				b, _ := json.Marshal(out)
				fmt.Fprintln(w, string(b))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "model directory")
	f.StringVar(&dataset, "data", "", "prepared dataset directory, for perplexity")
	f.StringVar(&split, "split", "val", "dataset part: val, train or all")
	f.Float64Var(&valFraction, "val-fraction", 0.01, "the validation fraction the split uses (match the training run's data.val_fraction)")
	f.IntVar(&seqLen, "seq-len", 1024, "tokens per sequence")
	f.IntVar(&sequences, "sequences", 256, "sequences to evaluate (0: the whole split)")
	f.IntVar(&micro, "micro-batch", 4, "sequences per forward pass")
	f.StringArrayVar(&tasks, "task", nil, "multiple-choice task `FILE` (JSON lines; repeatable)")
	f.IntVar(&limit, "limit", 0, "score at most this many items per task (0: all)")
	f.IntVar(&maxLen, "max-len", 0, "truncate contexts from the left to fit this many tokens (0: no limit)")
	f.StringVar(&tokPath, "tokenizer", "", "tokenizer file or directory (default: the model directory)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	addDevice(cmd, &dev)
	cmd.MarkFlagRequired("model")
	return cmd
}
