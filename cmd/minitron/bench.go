package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/bench"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/prune"
)

func newBench() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench COMMAND",
		Short: "Measure GFLOP/s and tokens per second of the hot paths, and a server's throughput and latency",
		Long: `bench times the hot paths on standard shapes, like llama-bench:

  matmul      C = A·Bᵀ of float32 matrices (default 1024³), GFLOP/s
  attention   causal attention alone at a shape's heads: forward and
              backward ms and TFLOP/s, or decoding after cached keys
  forward     forward passes of --batch × --seq tokens, tokens/s and GFLOP/s
  decode      greedy decoding after a short prompt, batch 1, tokens/s
  train       AdamW training steps on random tokens, tokens/s
  kd          distillation steps: a teacher's forward pass, the student's
              forward and backward with the KL loss, and AdamW
  serve       a running server under concurrent clients: tokens/s, latency
  checkpoint  write a random checkpoint of any shape (for prune benchmarks)

The model benchmarks run --model DIR, or random weights of a --shape
preset: ` + strings.Join(bench.Presets(), ", ") + `.
Each measurement repeats for at least --min-time; --json prints one JSON
object. bench/cpu.sh and bench/gpu.sh compare the figures with PyTorch's on
the same machine.`,
	}
	groupOnly(cmd)
	cmd.AddCommand(newBenchMatmul(), newBenchAttention())
	for _, mode := range []string{"forward", "decode", "train", "kd"} {
		cmd.AddCommand(newBenchModel(mode))
	}
	cmd.AddCommand(newBenchServe(), newBenchCheckpoint())
	return cmd
}

// benchFlags are the flags every timed benchmark has.
type benchFlags struct {
	dev     string
	asJSON  bool
	minTime time.Duration
}

func (b *benchFlags) add(cmd *cobra.Command) {
	addDevice(cmd, &b.dev)
	cmd.Flags().BoolVar(&b.asJSON, "json", false, "print one JSON object")
	cmd.Flags().DurationVar(&b.minTime, "min-time", 2*time.Second, "repeat each measurement for at least this long")
}

// open returns the shape the flags choose and the device's backend.
func (b *benchFlags) open(cmd *cobra.Command, sf *shapeFlags) (bench.Shape, backend.Backend, error) {
	shape, err := sf.get(cmd)
	if err != nil {
		return shape, nil, err
	}
	be, err := openBackend(b.dev)
	return shape, be, err
}

func (b *benchFlags) print(cmd *cobra.Command, res *bench.Result) {
	w := cmd.OutOrStdout()
	if b.asJSON {
		j, _ := json.Marshal(res)
		fmt.Fprintln(w, string(j))
		return
	}
	var dims []string
	for _, k := range []string{"m", "n", "k", "params", "past", "vocab", "hidden", "layers", "heads", "kv_heads", "head_dim", "ffn", "batch", "seq",
		"prompt", "new_tokens", "teacher_params", "teacher_hidden", "teacher_layers"} {
		if v, ok := res.Shape[k]; ok {
			dims = append(dims, fmt.Sprintf("%s %d", k, v))
		}
	}
	fmt.Fprintf(w, "%-8s %-16s threads %d  %s\n", res.Bench, res.Device, res.Threads, strings.Join(dims, ", "))
	if res.GFLOPS > 0 {
		fmt.Fprintf(w, "  %.1f GFLOP/s", res.GFLOPS)
	}
	if res.TokensSec > 0 {
		fmt.Fprintf(w, "  %.1f tokens/s", res.TokensSec)
	}
	if res.FwdMs > 0 {
		fmt.Fprintf(w, "  forward %.3f ms (%.4g TFLOP/s)", res.FwdMs, res.FwdTFLOPS)
	}
	if res.BwdMs > 0 {
		fmt.Fprintf(w, "  backward %.3f ms (%.4g TFLOP/s)", res.BwdMs, res.BwdTFLOPS)
	}
	if res.KVGBs > 0 {
		fmt.Fprintf(w, "  keys and values read at %.1f GB/s", res.KVGBs)
	}
	if res.PeakMemory > 0 {
		fmt.Fprintf(w, "  peak device memory %.2f GiB", float64(res.PeakMemory)/(1<<30))
	}
	fmt.Fprintf(w, "  (%d runs in %.2fs)\n", res.Runs, res.Seconds)
}

func newBenchMatmul() *cobra.Command {
	var bf benchFlags
	var m, n, k int
	cmd := &cobra.Command{
		Use:   "matmul [--m M --n N --k K]",
		Short: "Time C = A·Bᵀ of random float32 matrices, in GFLOP/s",
		Long: `matmul times the product C = A·Bᵀ of an --m × --k matrix A and an --n × --k
matrix B of random values, the backend's matrix product at the heart of
every layer, and reports GFLOP/s (2·m·n·k per product).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			be, err := openBackend(bf.dev)
			if err != nil {
				return err
			}
			res := bench.Result{Bench: "matmul", Device: be.Name(), Threads: runtime.GOMAXPROCS(0), Shape: map[string]int{"m": m, "n": n, "k": k}}
			if err := bench.Matmul(be, m, n, k, bf.minTime, &res); err != nil {
				return err
			}
			bf.print(cmd, &res)
			return nil
		},
	}
	bf.add(cmd)
	f := cmd.Flags()
	f.IntVar(&m, "m", 1024, "rows of A and C")
	f.IntVar(&n, "n", 1024, "rows of B, columns of C")
	f.IntVar(&k, "k", 1024, "columns of A and B (the shared dimension)")
	return cmd
}

// shapeFlags choose a random model's shape: a --shape preset, with the
// dimension flags changing single dimensions of it.
type shapeFlags struct {
	name  string
	shape bench.Shape
}

func (s *shapeFlags) add(cmd *cobra.Command) {
	s.shape, _ = bench.Preset("standard")
	f := cmd.Flags()
	f.StringVar(&s.name, "shape", "standard", "shape preset of the random model: "+strings.Join(bench.Presets(), ", "))
	f.IntVar(&s.shape.Vocab, "vocab", s.shape.Vocab, "vocabulary size of the random model")
	f.IntVar(&s.shape.Hidden, "hidden", s.shape.Hidden, "hidden size of the random model")
	f.IntVar(&s.shape.Layers, "layers", s.shape.Layers, "layers of the random model")
	f.IntVar(&s.shape.Heads, "heads", s.shape.Heads, "attention heads of the random model")
	f.IntVar(&s.shape.KVHeads, "kv-heads", s.shape.KVHeads, "KV heads of the random model")
	f.IntVar(&s.shape.HeadDim, "head-dim", s.shape.HeadDim, "head dimension of the random model")
	f.IntVar(&s.shape.FFN, "ffn", s.shape.FFN, "MLP size of the random model")
}

// get returns the preset with the dimensions given explicitly.
func (s *shapeFlags) get(cmd *cobra.Command) (bench.Shape, error) {
	preset, err := bench.Preset(s.name)
	if err != nil {
		return preset, err
	}
	for name, d := range map[string]struct{ dst, src *int }{"vocab": {&preset.Vocab, &s.shape.Vocab}, "hidden": {&preset.Hidden, &s.shape.Hidden},
		"layers": {&preset.Layers, &s.shape.Layers}, "heads": {&preset.Heads, &s.shape.Heads}, "kv-heads": {&preset.KVHeads, &s.shape.KVHeads},
		"head-dim": {&preset.HeadDim, &s.shape.HeadDim}, "ffn": {&preset.FFN, &s.shape.FFN}} {
		if cmd.Flags().Changed(name) {
			*d.dst = *d.src
		}
	}
	return preset, nil
}

const shapeHelp = `The model is --model DIR, or random weights of a --shape preset: standard
(26M parameters: vocab 8192, hidden 512, 8 layers, 8 heads, 2 KV heads,
head_dim 64, MLP 1536), standard-teacher, minitron-4b or nemotron-15b; the
dimension flags (--hidden, --layers, ...) change single dimensions of it.`

func newBenchAttention() *cobra.Command {
	var bf benchFlags
	var sf shapeFlags
	var batch, seq, past int
	cmd := &cobra.Command{
		Use:   "attention [--shape NAME] [--batch B --seq T] [--past N]",
		Short: "Time causal attention alone, in ms and TFLOP/s (or GB/s of keys and values when decoding)",
		Long: `attention times the backend's causal attention alone at a --shape's heads,
KV heads and head_dim, over --batch × --seq random queries: the forward and
backward passes in ms and TFLOP/s (the backward counted as 2.5 forwards, as
FlashAttention reports it). With --past N the queries follow N cached keys
and only the forward pass runs: --batch 1 --seq 1 --past 4095 is decoding
at a 4096-token context, reported as the keys and values read per second.

` + shapeHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			shape, be, err := bf.open(cmd, &sf)
			if err != nil {
				return err
			}
			res := bench.Result{Bench: "attention", Device: be.Name(), Threads: runtime.GOMAXPROCS(0),
				Shape: map[string]int{"batch": batch, "seq": seq, "past": past, "heads": shape.Heads, "kv_heads": shape.KVHeads, "head_dim": shape.HeadDim}}
			if err := bench.Attention(be, shape, batch, seq, past, bf.minTime, &res); err != nil {
				return err
			}
			bf.print(cmd, &res)
			return nil
		},
	}
	bf.add(cmd)
	sf.add(cmd)
	f := cmd.Flags()
	f.IntVar(&batch, "batch", 8, "sequences per batch")
	f.IntVar(&seq, "seq", 256, "queries per sequence")
	f.IntVar(&past, "past", 0, "cached keys before the queries (forward only)")
	return cmd
}

// benchModes describe the model benchmarks.
var benchModes = map[string]struct{ short, long string }{
	"forward": {"Time forward passes, in tokens/s and GFLOP/s",
		"forward times forward passes of --batch sequences of --seq random tokens\nthrough the model and reports tokens/s and GFLOP/s."},
	"decode": {"Time greedy decoding with the KV cache, batch 1, in tokens/s",
		"decode times greedy decoding of --new-tokens tokens after a random prompt\nof --prompt-tokens tokens, one sequence at a time with the KV cache (the\nprompt's prefill is not counted), and reports tokens/s."},
	"train": {"Time AdamW training steps, in tokens/s",
		"train times training steps (forward, backward with cross-entropy, AdamW)\non --batch sequences of --seq random tokens and reports tokens/s and\nGFLOP/s."},
	"kd": {"Time distillation steps against a teacher, in tokens/s",
		"kd times distillation steps: a --teacher-shape teacher's forward pass, the\nstudent's forward and backward with the KL loss, and AdamW, on --batch\nsequences of --seq random tokens; it reports the student's tokens/s and\nthe GFLOP/s of teacher and student together."},
}

func newBenchModel(mode string) *cobra.Command {
	var bf benchFlags
	var sf shapeFlags
	var modelDir, arch, teacherShape, stateDType string
	var batch, seq, prompt, newTokens int
	usage := mode + " [--model DIR | --shape NAME] [flags]"
	cmd := &cobra.Command{
		Use:   usage,
		Short: benchModes[mode].short,
		Long:  benchModes[mode].long + "\n\n" + shapeHelp,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			shape, be, err := bf.open(cmd, &sf)
			if err != nil {
				return err
			}
			var m *model.Model
			if modelDir != "" {
				if m, err = loadModel(modelDir, be); err != nil {
					return err
				}
			} else {
				cfg, err := shape.Config(arch)
				if err != nil {
					return err
				}
				if m, err = model.Random(cfg, be, 1); err != nil {
					return err
				}
			}
			res := bench.Result{Bench: mode, Device: be.Name(), Threads: runtime.GOMAXPROCS(0), Shape: bench.ModelShape(m.Config)}
			switch mode {
			case "forward":
				res.Shape["batch"], res.Shape["seq"] = batch, seq
				err = bench.Forward(m, batch, seq, bf.minTime, &res)
			case "train":
				res.Shape["batch"], res.Shape["seq"] = batch, seq
				err = bench.Train(m, batch, seq, stateDType, bf.minTime, &res)
			case "kd":
				res.Shape["batch"], res.Shape["seq"] = batch, seq
				ts, terr := bench.Preset(teacherShape)
				if terr != nil {
					return terr
				}
				ts.Vocab = m.Config.VocabSize
				tcfg, terr := ts.Config(arch)
				if terr != nil {
					return terr
				}
				teacher, terr := model.Random(tcfg, be, 2)
				if terr != nil {
					return fmt.Errorf("teacher: %w", terr)
				}
				tp, _ := tcfg.NumParams()
				res.Shape["teacher_params"], res.Shape["teacher_hidden"], res.Shape["teacher_layers"] = int(tp), ts.Hidden, ts.Layers
				err = bench.KD(teacher, m, batch, seq, stateDType, bf.minTime, &res)
			case "decode":
				res.Shape["prompt"], res.Shape["new_tokens"] = prompt, newTokens
				err = bench.Decode(cmd.Context(), m, prompt, newTokens, bf.minTime, &res)
			}
			if err != nil {
				return err
			}
			bf.print(cmd, &res)
			return nil
		},
	}
	bf.add(cmd)
	sf.add(cmd)
	f := cmd.Flags()
	f.StringVar(&modelDir, "model", "", "benchmark this checkpoint instead of random weights")
	f.StringVar(&arch, "arch", "nemotron", "architecture of the random model: nemotron or llama")
	switch mode {
	case "decode":
		f.IntVar(&prompt, "prompt-tokens", 16, "prompt length")
		f.IntVar(&newTokens, "new-tokens", 128, "tokens to generate")
	default:
		f.IntVar(&batch, "batch", 8, "sequences per batch")
		f.IntVar(&seq, "seq", 256, "tokens per sequence")
	}
	if mode == "train" || mode == "kd" {
		f.StringVar(&stateDType, "state-dtype", "f32", "optimizer moment dtype: f32 or bf16")
	}
	if mode == "kd" {
		f.StringVar(&teacherShape, "teacher-shape", "standard-teacher", "shape preset of the random teacher")
	}
	return cmd
}

func newBenchServe() *cobra.Command {
	var opt bench.LoadOptions
	var levels string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "serve [--url http://127.0.0.1:8080] [--concurrency 1,4,16]",
		Short: "Load-test a running server: throughput and p50/p99 latency at several concurrency levels",
		Long: `serve sends --requests completion requests of --max-tokens tokens (the
same --prompt, temperature 0.8, seeds 0, 1, ...) to a running minitron serve
(or any OpenAI-compatible /v1/completions endpoint) at --url, from each
number of concurrent clients in --concurrency in turn, and reports the
completion tokens per second, requests per second and the 50th and 99th
percentile latency of each level. bench/serve.sh starts a server and runs it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out []*bench.LoadResult
			for _, l := range strings.Split(levels, ",") {
				c, err := strconv.Atoi(strings.TrimSpace(l))
				if err != nil || c < 1 {
					return fmt.Errorf("--concurrency: %q is not a positive number", l)
				}
				res, err := bench.Load(cmd.Context(), opt, c)
				if err != nil {
					return err
				}
				out = append(out, res)
				if !asJSON {
					fmt.Fprintf(cmd.OutOrStdout(), "concurrency %3d: %6.1f tokens/s, %5.2f requests/s, latency p50 %7.1f ms, p99 %7.1f ms (%d requests, %d failed)\n",
						c, res.TokensPerSecond, res.RequestsPerSecond, res.P50ms, res.P99ms, res.Requests, res.Failures)
				}
			}
			if asJSON {
				b, _ := json.Marshal(out)
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opt.URL, "url", "http://127.0.0.1:8080", "server address")
	f.StringVar(&levels, "concurrency", "1,4,16", "comma-separated numbers of concurrent clients")
	f.IntVar(&opt.Requests, "requests", 32, "requests per concurrency level")
	f.IntVar(&opt.MaxTokens, "max-tokens", 32, "max_tokens of each request")
	f.StringVar(&opt.Prompt, "prompt", "func (s *Server) ", "prompt of each request")
	f.BoolVar(&asJSON, "json", false, "print one JSON array")
	return cmd
}

func newBenchCheckpoint() *cobra.Command {
	var cfgPath, out, dtype, scores string
	var seed uint64
	var shardGB float64
	cmd := &cobra.Command{
		Use:   "checkpoint --config CONFIG.json --out DIR [--scores SCORES.safetensors]",
		Short: "Write a random-weight checkpoint of any shape (and random importance scores) for benchmarks",
		Long: `checkpoint streams a checkpoint with random weights of the shape in
CONFIG.json to DIR, a block at a time, so a 15B-parameter checkpoint can be
made on a machine with little memory. --scores also writes random importance
scores of that shape, for pruning benchmarks (bench/prune.sh).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := model.LoadConfig(cfgPath)
			if err != nil {
				return err
			}
			dt, err := backend.ParseDType(dtype)
			if err != nil {
				return err
			}
			if err := model.WriteRandom(cfg, out, dt, seed, int64(shardGB*(1<<30))); err != nil {
				return err
			}
			if scores != "" {
				s := prune.RandomScores(cfg, seed)
				s.Meta["model"] = out
				if err := s.Save(scores); err != nil {
					return err
				}
			}
			total, _ := cfg.NumParams()
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s random parameters (%s) to %s\n", count(total), human(model.DirSize(out)), out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "config.json giving the shape")
	f.StringVar(&out, "out", "", "directory to write")
	f.StringVar(&dtype, "dtype", "bf16", "dtype of the weights: bf16, f16 or f32")
	f.StringVar(&scores, "scores", "", "also write random importance scores of this shape to this file")
	f.Uint64Var(&seed, "seed", 1, "random seed")
	f.Float64Var(&shardGB, "shard-gb", 5, "maximum shard size in GB")
	cmd.MarkFlagRequired("config")
	cmd.MarkFlagRequired("out")
	return cmd
}
