// Package bench times minitron's hot paths the way llama-bench does: matrix
// products in GFLOP/s; attention alone in TFLOP/s; forward passes, decoding, training and distillation
// steps in tokens per second, at standard shapes or a checkpoint's; and the
// throughput and latency of a running server under concurrent clients. The
// minitron bench command prints what it measures; the scripts beside this
// file run it against PyTorch on the same machine.
package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/generate"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/train"
)

// Shape is the shape of a random benchmark model.
type Shape struct {
	Vocab, Hidden, Layers, Heads, KVHeads, HeadDim, FFN int
}

// presets are the shapes Preset names: the standard CPU shape (a
// 26M-parameter Nemotron-architecture model), a teacher twice its width
// for distillation, and the real Minitron-4B student and Nemotron-4 15B
// teacher.
func presets() map[string]Shape {
	return map[string]Shape{
		"standard":         {Vocab: 8192, Hidden: 512, Layers: 8, Heads: 8, KVHeads: 2, HeadDim: 64, FFN: 1536},
		"standard-teacher": {Vocab: 8192, Hidden: 768, Layers: 12, Heads: 12, KVHeads: 4, HeadDim: 64, FFN: 2304},
		"minitron-4b":      {Vocab: 256000, Hidden: 3072, Layers: 32, Heads: 24, KVHeads: 8, HeadDim: 128, FFN: 9216},
		"nemotron-15b":     {Vocab: 256000, Hidden: 6144, Layers: 32, Heads: 48, KVHeads: 8, HeadDim: 128, FFN: 24576},
	}
}

// Presets lists the names Preset knows, sorted.
func Presets() []string {
	var names []string
	for k := range presets() {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Preset returns a named shape.
func Preset(name string) (Shape, error) {
	s, ok := presets()[name]
	if !ok {
		return s, fmt.Errorf("bench: unknown shape %q; use one of %s", name, strings.Join(Presets(), ", "))
	}
	return s, nil
}

// Config is the model configuration of the shape in an architecture,
// nemotron or llama.
func (s Shape) Config(arch string) (*model.Config, error) {
	act := map[string]string{"nemotron": "relu2", "llama": "silu"}[arch]
	archName := map[string]string{"nemotron": "NemotronForCausalLM", "llama": "LlamaForCausalLM"}[arch]
	if archName == "" {
		return nil, fmt.Errorf("bench: architecture %q: use nemotron or llama", arch)
	}
	js := fmt.Sprintf(`{"architectures":[%q],"vocab_size":%d,"hidden_size":%d,"num_hidden_layers":%d,"num_attention_heads":%d,
		"num_key_value_heads":%d,"head_dim":%d,"intermediate_size":%d,"hidden_act":%q,"max_position_embeddings":4096,"initializer_range":0.02}`,
		archName, s.Vocab, s.Hidden, s.Layers, s.Heads, s.KVHeads, s.HeadDim, s.FFN, act)
	return model.ParseConfig([]byte(js))
}

// Result is one measurement.
type Result struct {
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

// ModelShape records a model's dimensions in a result.
func ModelShape(c *model.Config) map[string]int {
	total, _ := c.NumParams()
	return map[string]int{"vocab": c.VocabSize, "hidden": c.HiddenSize, "layers": c.NumLayers, "heads": c.NumHeads,
		"kv_heads": c.NumKVHeads, "head_dim": c.HeadDim, "ffn": c.IntermediateSize, "params": int(total)}
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

// Matmul times C = A·Bᵀ of m×k by n×k random matrices.
func Matmul(be backend.Backend, m, n, k int, minTime time.Duration, res *Result) error {
	r := rand.New(rand.NewPCG(1, 1))
	a, err := randTensor(be, r, m, k)
	if err != nil {
		return err
	}
	defer be.Free(a)
	b, err := randTensor(be, r, n, k)
	if err != nil {
		return err
	}
	defer be.Free(b)
	c, err := be.New(be.FloatDType(), m, n)
	if err != nil {
		return err
	}
	defer be.Free(c)
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

// Forward times forward passes of batch × seq random tokens.
func Forward(m *model.Model, batch, seq int, minTime time.Duration, res *Result) error {
	a, err := m.NewActivations(batch*seq, false)
	if err != nil {
		return err
	}
	defer a.Free(m.Backend)
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
	res.GFLOPS = m.Config.ForwardFLOPs(batch, seq) * float64(runs) / d.Seconds() / 1e9
	return err
}

// Decode times greedy decoding of newTokens after a random prompt of
// prompt tokens, batch 1.
func Decode(ctx context.Context, m *model.Model, prompt, newTokens int, minTime time.Duration, res *Result) error {
	r := rand.New(rand.NewPCG(3, 3))
	ids := make([]int32, prompt)
	for i := range ids {
		ids[i] = int32(r.IntN(m.Config.VocabSize))
	}
	var decode time.Duration
	var tokens int
	runs, d, err := repeat(minTime, func() error {
		out, err := generate.Generate(ctx, m, [][]int32{ids}, generate.Options{MaxNewTokens: newTokens})
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

// Train times AdamW training steps of m on batch × seq random tokens;
// stateDType is the optimizer moments' dtype, f32 or bf16.
func Train(m *model.Model, batch, seq int, stateDType string, minTime time.Duration, res *Result) error {
	return steps(m, train.CrossEntropy{}, batch, seq, stateDType, 3, minTime, res)
}

// KD times distillation steps: the teacher's forward pass and the
// student's forward and backward passes with the KL loss, plus AdamW.
func KD(teacher, student *model.Model, batch, seq int, stateDType string, minTime time.Duration, res *Result) error {
	obj, err := distill.NewObjective(teacher, student, distill.KD{Temperature: 1})
	if err != nil {
		return err
	}
	defer obj.Free()
	// FLOPs: the teacher's forward, relative to the student's.
	ratio := teacher.Config.ForwardFLOPs(batch, seq) / student.Config.ForwardFLOPs(batch, seq)
	return steps(student, obj, batch, seq, stateDType, 3+ratio, minTime, res)
}

// steps times training steps of m with objective obj; flopsPerFwd is the
// step's FLOPs in units of m's forward pass.
func steps(m *model.Model, obj train.Objective, batch, seq int, stateDType string, flopsPerFwd float64, minTime time.Duration, res *Result) error {
	cfg := train.Default()
	cfg.Data.SeqLen = seq
	cfg.Train.MicroBatch = batch
	cfg.Train.Steps = 1 << 30
	if stateDType != "f32" && stateDType != "bf16" {
		return fmt.Errorf("bench: optimizer state dtype %q: use f32 or bf16", stateDType)
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
	res.GFLOPS = flopsPerFwd * m.Config.ForwardFLOPs(batch, seq) * float64(runs) / d.Seconds() / 1e9
	if s, ok := m.Backend.(interface{ MemoryStats() (int64, int64, int64) }); ok {
		_, res.PeakMemory, _ = s.MemoryStats()
	}
	return err
}

// Attention times the backend's causal attention alone, at the shape's
// heads, KV heads and head dimension, over batch × seq random queries: the
// forward pass and, when there are no cached keys (past 0), the backward
// pass, in milliseconds and TFLOP/s (the backward counted as 2.5
// forwards, as FlashAttention reports it); with past > 0 the queries
// follow past cached keys and the key/value bytes read per second are
// reported (decoding).
func Attention(be backend.Backend, s Shape, batch, seq, past int, minTime time.Duration, res *Result) error {
	if batch < 1 || seq < 1 || past < 0 {
		return fmt.Errorf("bench: attention: --batch %d, --seq %d, --past %d: want positive sizes and past >= 0", batch, seq, past)
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
