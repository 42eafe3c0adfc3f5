package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/generate"
	"github.com/minitron/minitron/importance"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/train"
)

// benchShape is the standard shape of the CPU benchmarks: a 26M-parameter
// Nemotron-architecture model.
type benchShape struct {
	Vocab, Hidden, Layers, Heads, KVHeads, HeadDim, FFN int
}

var standardShape = benchShape{Vocab: 8192, Hidden: 512, Layers: 8, Heads: 8, KVHeads: 2, HeadDim: 64, FFN: 1536}

// shapePresets are the shapes --shape and --teacher-shape name: the
// standard CPU shape, a teacher twice its width for kd, and the real
// Minitron-4B student and Nemotron-4 15B teacher.
var shapePresets = map[string]benchShape{
	"standard":         standardShape,
	"standard-teacher": {Vocab: 8192, Hidden: 768, Layers: 12, Heads: 12, KVHeads: 4, HeadDim: 64, FFN: 2304},
	"minitron-4b":      {Vocab: 256000, Hidden: 3072, Layers: 32, Heads: 24, KVHeads: 8, HeadDim: 128, FFN: 9216},
	"nemotron-15b":     {Vocab: 256000, Hidden: 6144, Layers: 32, Heads: 48, KVHeads: 8, HeadDim: 128, FFN: 24576},
}

func presetShape(name string) (benchShape, error) {
	s, ok := shapePresets[name]
	if !ok {
		var names []string
		for k := range shapePresets {
			names = append(names, k)
		}
		sort.Strings(names)
		return s, fmt.Errorf("unknown shape %q; use one of %s", name, strings.Join(names, ", "))
	}
	return s, nil
}

func (s benchShape) config(arch string) (*model.Config, error) {
	act := map[string]string{"nemotron": "relu2", "llama": "silu"}[arch]
	archName := map[string]string{"nemotron": "NemotronForCausalLM", "llama": "LlamaForCausalLM"}[arch]
	if archName == "" {
		return nil, fmt.Errorf("--arch %q: use nemotron or llama", arch)
	}
	js := fmt.Sprintf(`{"architectures":[%q],"vocab_size":%d,"hidden_size":%d,"num_hidden_layers":%d,"num_attention_heads":%d,
		"num_key_value_heads":%d,"head_dim":%d,"intermediate_size":%d,"hidden_act":%q,"max_position_embeddings":4096,"initializer_range":0.02}`,
		archName, s.Vocab, s.Hidden, s.Layers, s.Heads, s.KVHeads, s.HeadDim, s.FFN, act)
	return model.ParseConfig([]byte(js))
}

type benchResult struct {
	Bench     string         `json:"bench"`
	Device    string         `json:"device"`
	Threads   int            `json:"threads"`
	Shape     map[string]int `json:"shape"`
	Seconds   float64        `json:"seconds"`
	Runs      int            `json:"runs"`
	GFLOPS    float64        `json:"gflops,omitempty"`
	TokensSec float64        `json:"tokens_per_second,omitempty"`
	// PeakMemory is the most device memory held by tensors (GPU only).
	PeakMemory int64 `json:"peak_device_memory,omitempty"`
	// Attention alone: milliseconds per call and TFLOP/s of the forward and
	// backward passes (backward counted as 2.5 forwards, as FlashAttention
	// reports it), and for decoding the key/value bytes read per second.
	FwdMs     float64 `json:"forward_ms,omitempty"`
	BwdMs     float64 `json:"backward_ms,omitempty"`
	FwdTFLOPS float64 `json:"forward_tflops,omitempty"`
	BwdTFLOPS float64 `json:"backward_tflops,omitempty"`
	KVGBs     float64 `json:"kv_gbytes_per_second,omitempty"`
}

func newBench() *cobra.Command {
	var dev, arch, modelDir, shapeName, teacherShape, stateDType string
	var asJSON bool
	var minTime time.Duration
	shape := standardShape
	var m, n, k, batch, seq, prompt, newTokens, past int
	cmd := &cobra.Command{
		Use:   "bench matmul|attention|forward|decode|train|kd",
		Short: "Measure matmul and attention FLOP/s and forward / decode / training / distillation tokens per second",
		Long: `bench times the hot paths on standard shapes, like llama-bench:

  matmul   C = A·Bᵀ of --m × --k by --n × --k float32 matrices (default 1024³), GFLOP/s
  attention causal attention alone at the shape's heads, KV heads and head_dim
           over --batch × --seq queries: forward and backward ms and TFLOP/s;
           with --past N the queries follow N cached keys (forward only:
           --batch 1 --seq 1 --past 4095 is decoding at a 4096-token context)
  forward  a forward pass of --batch × --seq tokens through the model, tokens/s and GFLOP/s
  decode   greedy decoding of --new-tokens after a --prompt-token prompt, batch 1, tokens/s
  train    AdamW training steps on --batch × --seq random tokens, tokens/s
  kd       distillation steps: a --teacher-shape teacher's forward pass, the
           student's forward and backward with the KL loss, and AdamW

The model is --model DIR, or random weights at a --shape preset: standard
(the default, 26M parameters: vocab 8192, hidden 512, 8 layers, 8 heads, 2 KV
heads, head_dim 64, MLP 1536), standard-teacher, minitron-4b or nemotron-15b;
the shape flags change single dimensions. Each measurement is repeated for at
least --min-time.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"matmul", "attention", "forward", "decode", "train", "kd"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("shape") {
				preset, err := presetShape(shapeName)
				if err != nil {
					return err
				}
				// Explicit dimension flags still win over the preset.
				for name, dst := range map[string]*int{"vocab": &shape.Vocab, "hidden": &shape.Hidden, "layers": &shape.Layers,
					"heads": &shape.Heads, "kv-heads": &shape.KVHeads, "head-dim": &shape.HeadDim, "ffn": &shape.FFN} {
					if !cmd.Flags().Changed(name) {
						*dst = map[string]int{"vocab": preset.Vocab, "hidden": preset.Hidden, "layers": preset.Layers, "heads": preset.Heads,
							"kv-heads": preset.KVHeads, "head-dim": preset.HeadDim, "ffn": preset.FFN}[name]
					}
				}
			}
			be, err := openBackend(dev)
			if err != nil {
				return err
			}
			res := benchResult{Bench: args[0], Device: be.Name(), Threads: runtime.GOMAXPROCS(0)}
			var mdl *model.Model
			if args[0] != "matmul" && args[0] != "attention" {
				if modelDir != "" {
					if mdl, err = loadModel(modelDir, be); err != nil {
						return err
					}
				} else {
					cfg, err := shape.config(arch)
					if err != nil {
						return err
					}
					if mdl, err = model.Random(cfg, be, 1); err != nil {
						return err
					}
				}
				c := mdl.Config
				total, _ := c.NumParams()
				res.Shape = map[string]int{"vocab": c.VocabSize, "hidden": c.HiddenSize, "layers": c.NumLayers, "heads": c.NumHeads,
					"kv_heads": c.NumKVHeads, "head_dim": c.HeadDim, "ffn": c.IntermediateSize, "params": int(total)}
			}
			switch args[0] {
			case "matmul":
				res.Shape = map[string]int{"m": m, "n": n, "k": k}
				err = benchMatmul(be, m, n, k, minTime, &res)
			case "attention":
				res.Shape = map[string]int{"batch": batch, "seq": seq, "past": past, "heads": shape.Heads, "kv_heads": shape.KVHeads, "head_dim": shape.HeadDim}
				err = benchAttention(be, shape, batch, seq, past, minTime, &res)
			case "forward":
				res.Shape["batch"], res.Shape["seq"] = batch, seq
				err = benchForward(mdl, batch, seq, minTime, &res)
			case "train":
				res.Shape["batch"], res.Shape["seq"] = batch, seq
				err = benchTrain(mdl, batch, seq, stateDType, minTime, &res)
			case "kd":
				res.Shape["batch"], res.Shape["seq"] = batch, seq
				ts, terr := presetShape(teacherShape)
				if terr != nil {
					return terr
				}
				ts.Vocab = mdl.Config.VocabSize
				tcfg, terr := ts.config(arch)
				if terr != nil {
					return terr
				}
				teacher, terr := model.Random(tcfg, be, 2)
				if terr != nil {
					return fmt.Errorf("teacher: %w", terr)
				}
				tp, _ := tcfg.NumParams()
				res.Shape["teacher_params"], res.Shape["teacher_hidden"], res.Shape["teacher_layers"] = int(tp), ts.Hidden, ts.Layers
				err = benchKD(teacher, mdl, batch, seq, stateDType, minTime, &res)
			case "decode":
				res.Shape["prompt"], res.Shape["new_tokens"] = prompt, newTokens
				err = benchDecode(cmd, mdl, prompt, newTokens, minTime, &res)
			default:
				return fmt.Errorf("unknown benchmark %q: use matmul, attention, forward, decode, train or kd", args[0])
			}
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				b, _ := json.Marshal(res)
				fmt.Fprintln(w, string(b))
				return nil
			}
			fmt.Fprintf(w, "%-8s %-16s threads %d  %v\n", res.Bench, res.Device, res.Threads, res.Shape)
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
			return nil
		},
	}
	f := cmd.Flags()
	addDevice(cmd, &dev)
	f.BoolVar(&asJSON, "json", false, "print one JSON object")
	f.DurationVar(&minTime, "min-time", 2*time.Second, "repeat each measurement for at least this long")
	f.StringVar(&modelDir, "model", "", "benchmark this checkpoint instead of random weights")
	f.StringVar(&arch, "arch", "nemotron", "architecture of the random model: nemotron or llama")
	f.StringVar(&shapeName, "shape", "standard", "shape preset of the random model: standard, standard-teacher, minitron-4b, nemotron-15b")
	f.StringVar(&teacherShape, "teacher-shape", "standard-teacher", "kd: shape preset of the random teacher")
	f.StringVar(&stateDType, "state-dtype", "f32", "train, kd: optimizer moment dtype, f32 or bf16")
	f.IntVar(&shape.Vocab, "vocab", shape.Vocab, "vocabulary size of the random model")
	f.IntVar(&shape.Hidden, "hidden", shape.Hidden, "hidden size of the random model")
	f.IntVar(&shape.Layers, "layers", shape.Layers, "layers of the random model")
	f.IntVar(&shape.Heads, "heads", shape.Heads, "attention heads of the random model")
	f.IntVar(&shape.KVHeads, "kv-heads", shape.KVHeads, "KV heads of the random model")
	f.IntVar(&shape.HeadDim, "head-dim", shape.HeadDim, "head dimension of the random model")
	f.IntVar(&shape.FFN, "ffn", shape.FFN, "MLP size of the random model")
	f.IntVar(&m, "m", 1024, "matmul: rows of A and C")
	f.IntVar(&n, "n", 1024, "matmul: rows of B, columns of C")
	f.IntVar(&k, "k", 1024, "matmul: shared dimension")
	f.IntVar(&batch, "batch", 8, "forward, train: sequences per batch")
	f.IntVar(&seq, "seq", 256, "forward, train: tokens per sequence")
	f.IntVar(&past, "past", 0, "attention: cached keys before the queries (forward only)")
	f.IntVar(&prompt, "prompt-tokens", 16, "decode: prompt length")
	f.IntVar(&newTokens, "new-tokens", 128, "decode: tokens to generate")
	cmd.AddCommand(newBenchCheckpoint(), newBenchServe())
	return cmd
}

// repeat runs f until minTime has passed (at least twice, after a warm-up).
func repeat(minTime time.Duration, f func() error) (int, time.Duration, error) {
	if err := f(); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	runs := 0
	for runs < 2 || time.Since(start) < minTime {
		if err := f(); err != nil {
			return 0, 0, err
		}
		runs++
	}
	return runs, time.Since(start), nil
}

func randTensor(be backend.Backend, r *rand.Rand, shape ...int) (backend.Tensor, error) {
	v := make([]float32, backend.Numel(shape))
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return be.FromFloat32(v, shape...)
}

func benchMatmul(be backend.Backend, m, n, k int, minTime time.Duration, res *benchResult) error {
	r := rand.New(rand.NewPCG(1, 1))
	a, err := randTensor(be, r, m, k)
	if err != nil {
		return err
	}
	b, err := randTensor(be, r, n, k)
	if err != nil {
		return err
	}
	c, err := be.New(be.FloatDType(), m, n)
	if err != nil {
		return err
	}
	// A GPU queues products asynchronously: synchronize once per 20 of
	// them, as a model's layers run, not after each one.
	inner := 1
	if be.FloatDType() != backend.F32 {
		inner = 20
	}
	runs, d, err := repeat(minTime, func() error {
		for range inner {
			if err := be.MatMul(c, a, b, false, true, 1, 0); err != nil {
				return err
			}
		}
		return be.Sync()
	})
	runs *= inner
	res.Runs, res.Seconds = runs, d.Seconds()
	res.GFLOPS = 2 * float64(m) * float64(n) * float64(k) * float64(runs) / d.Seconds() / 1e9
	return err
}

// benchAttention times Attention, and AttentionBackward when there are no
// cached keys, on random bf16 (or the backend's float) tensors.
func benchAttention(be backend.Backend, s benchShape, batch, seq, past int, minTime time.Duration, res *benchResult) error {
	if batch < 1 || seq < 1 || past < 0 {
		return fmt.Errorf("attention: --batch %d, --seq %d, --past %d: want positive sizes and past >= 0", batch, seq, past)
	}
	a := backend.Attn{B: batch, T: seq, Heads: s.Heads, KVHeads: s.KVHeads, HeadDim: s.HeadDim, KVRows: past + seq,
		Scale: float32(1 / math.Sqrt(float64(s.HeadDim)))}
	if past > 0 {
		a.Past = make([]int, batch)
		for i := range a.Past {
			a.Past[i] = past
		}
	}
	r := rand.New(rand.NewPCG(4, 4))
	n, nkv, wq, wk := batch*seq, batch*a.KVRows, s.Heads*s.HeadDim, s.KVHeads*s.HeadDim
	var ts []backend.Tensor
	defer func() {
		for _, t := range ts {
			be.Free(t)
		}
	}()
	mk := func(rows, cols int, random bool) (backend.Tensor, error) {
		var t backend.Tensor
		var err error
		if random {
			t, err = randTensor(be, r, rows, cols)
		} else {
			t, err = be.New(be.FloatDType(), rows, cols)
		}
		if err == nil {
			ts = append(ts, t)
		}
		return t, err
	}
	var q, k, v, out, dout, dq, dk, dv backend.Tensor
	for _, p := range []struct {
		t          *backend.Tensor
		rows, cols int
		random     bool
	}{{&q, n, wq, true}, {&k, nkv, wk, true}, {&v, nkv, wk, true}, {&out, n, wq, false}, {&dout, n, wq, true},
		{&dq, n, wq, false}, {&dk, nkv, wk, false}, {&dv, nkv, wk, false}} {
		var err error
		if *p.t, err = mk(p.rows, p.cols, p.random); err != nil {
			return err
		}
	}
	lse, err := be.New(backend.F32, n, s.Heads)
	if err != nil {
		return err
	}
	ts = append(ts, lse)
	// Causal FLOPs: query i sees past+i+1 keys; q·k and p·v are 2 FLOPs per
	// multiply-add each.
	keys := float64(seq)*float64(past) + float64(seq)*float64(seq+1)/2
	fwdFLOPs := 4 * float64(batch) * float64(s.Heads) * float64(s.HeadDim) * keys
	timeIt := func(f func() error) (float64, error) {
		inner := 1
		if be.FloatDType() != backend.F32 {
			inner = 20 // a GPU queues: synchronize once per 20 calls
		}
		runs, d, err := repeat(minTime, func() error {
			for range inner {
				if err := f(); err != nil {
					return err
				}
			}
			return be.Sync()
		})
		res.Runs += runs * inner
		res.Seconds += d.Seconds()
		return d.Seconds() / float64(runs*inner), err
	}
	sec, err := timeIt(func() error { return be.Attention(out, lse, q, k, v, a) })
	if err != nil {
		return err
	}
	res.FwdMs, res.FwdTFLOPS = sec*1e3, fwdFLOPs/sec/1e12
	if past > 0 {
		// Keys and values of every KV head, bf16 or the float dtype, read once.
		res.KVGBs = 2 * float64(batch) * float64(past+seq) * float64(wk) * float64(be.FloatDType().Size()) / sec / 1e9
		return nil
	}
	sec, err = timeIt(func() error { return be.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, a) })
	if err != nil {
		return err
	}
	res.BwdMs, res.BwdTFLOPS = sec*1e3, 2.5*fwdFLOPs/sec/1e12
	return nil
}

// forwardFLOPs counts the matmul and attention FLOPs of a forward pass.
func forwardFLOPs(c *model.Config, batch, seq int) float64 {
	_, nonEmb := c.NumParams()
	tokens := float64(batch * seq)
	linear := 2 * tokens * float64(nonEmb+int64(c.VocabSize*c.HiddenSize))
	attn := 2 * 2 * float64(batch) * float64(seq*(seq+1)/2) * float64(c.NumHeads*c.HeadDim) * float64(c.NumLayers)
	return linear + attn
}

func benchForward(m *model.Model, batch, seq int, minTime time.Duration, res *benchResult) error {
	a, err := m.NewActivations(batch*seq, false)
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(2, 2))
	ids := make([]int32, batch*seq)
	for i := range ids {
		ids[i] = int32(r.IntN(m.Config.VocabSize))
	}
	runs, d, err := repeat(minTime, func() error {
		_, err := m.Forward(a, model.Input{B: batch, T: seq, IDs: ids}, model.Options{})
		if err != nil {
			return err
		}
		return m.Backend.Sync()
	})
	res.Runs, res.Seconds = runs, d.Seconds()
	res.TokensSec = float64(batch*seq*runs) / d.Seconds()
	res.GFLOPS = forwardFLOPs(m.Config, batch, seq) * float64(runs) / d.Seconds() / 1e9
	return err
}

func benchDecode(cmd *cobra.Command, m *model.Model, prompt, newTokens int, minTime time.Duration, res *benchResult) error {
	r := rand.New(rand.NewPCG(3, 3))
	ids := make([]int32, prompt)
	for i := range ids {
		ids[i] = int32(r.IntN(m.Config.VocabSize))
	}
	var decode time.Duration
	var tokens int
	runs, d, err := repeat(minTime, func() error {
		out, err := generate.Generate(cmd.Context(), m, [][]int32{ids}, generate.Options{MaxNewTokens: newTokens})
		if err != nil {
			return err
		}
		decode += out.Decode
		tokens += out.NewTokens - 1 // the first token comes from the prefill
		return nil
	})
	res.Runs, res.Seconds = runs, d.Seconds()
	// The warm-up run is included in the sums; it is one more run of the same work.
	res.TokensSec = float64(tokens) / decode.Seconds()
	return err
}

func benchTrain(m *model.Model, batch, seq int, stateDType string, minTime time.Duration, res *benchResult) error {
	return benchSteps(m, train.CrossEntropy{}, batch, seq, stateDType, 3, minTime, res)
}

// benchKD times distillation steps: the teacher's forward pass and the
// student's forward and backward passes with the KL loss, plus AdamW.
func benchKD(teacher, student *model.Model, batch, seq int, stateDType string, minTime time.Duration, res *benchResult) error {
	obj, err := distill.NewObjective(teacher, student, distill.KD{Temperature: 1})
	if err != nil {
		return err
	}
	defer obj.Free()
	// FLOPs: the teacher's forward, relative to the student's.
	ratio := forwardFLOPs(teacher.Config, batch, seq) / forwardFLOPs(student.Config, batch, seq)
	return benchSteps(student, obj, batch, seq, stateDType, 3+ratio, minTime, res)
}

// benchSteps times training steps of m with objective obj; flopsPerFwd is
// the step's FLOPs in units of m's forward pass.
func benchSteps(m *model.Model, obj train.Objective, batch, seq int, stateDType string, flopsPerFwd float64, minTime time.Duration, res *benchResult) error {
	cfg := train.Default()
	cfg.Data.SeqLen = seq
	cfg.Train.MicroBatch = batch
	cfg.Train.Steps = 1 << 30
	if stateDType != "f32" && stateDType != "bf16" {
		return fmt.Errorf("--state-dtype %q: use f32 or bf16", stateDType)
	}
	cfg.Optimizer.StateDType = stateDType
	t, err := train.NewTrainer(&cfg, m, obj, &train.RandomBatcher{Vocab: m.Config.VocabSize, Len: seq, Seed: 1})
	if err != nil {
		return err
	}
	defer t.Free()
	runs, d, err := repeat(minTime, func() error {
		_, err := t.TrainStep()
		return err
	})
	res.Runs, res.Seconds = runs, d.Seconds()
	res.TokensSec = float64(batch*seq*runs) / d.Seconds()
	res.GFLOPS = flopsPerFwd * forwardFLOPs(m.Config, batch, seq) * float64(runs) / d.Seconds() / 1e9
	if s, ok := m.Backend.(interface{ MemoryStats() (int64, int64, int64) }); ok {
		_, res.PeakMemory, _ = s.MemoryStats()
	}
	return err
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
scores of that shape, for pruning benchmarks.`,
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
				r := rand.New(rand.NewPCG(seed, 99))
				vec := func(n int) []float32 {
					v := make([]float32, n)
					for i := range v {
						v[i] = r.Float32()
					}
					return v
				}
				s := &importance.Scores{Embedding: vec(cfg.HiddenSize), LayerBI: vec(cfg.NumLayers), Meta: map[string]string{"model": out, "random": "true"}}
				for range cfg.NumLayers {
					s.Head = append(s.Head, vec(cfg.NumHeads))
					s.Neuron = append(s.Neuron, vec(cfg.IntermediateSize))
				}
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
