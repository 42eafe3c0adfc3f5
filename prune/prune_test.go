package prune

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/backendtest"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/importance"
	"github.com/minitron/minitron/internal/fixture"
	"github.com/minitron/minitron/model"
)

const fixtures = "../testdata/hf"

type pruneJSON struct {
	Hidden    int     `json:"hidden_size"`
	Heads     int     `json:"num_attention_heads"`
	FFN       int     `json:"intermediate_size"`
	KeptHeads [][]int `json:"kept_heads"`
}

// TestParity prunes each fixture as prune.json says, with the fixture's
// scores: the kept heads and the pruned model's logits match.
func TestParity(t *testing.T) {
	for _, name := range []string{"nemotron-tiny", "nemotron-odd", "llama-tiny"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(fixtures, name)
			var pj pruneJSON
			b, _ := os.ReadFile(filepath.Join(dir, "prune.json"))
			if err := json.Unmarshal(b, &pj); err != nil {
				t.Fatal(err)
			}
			cfg, err := model.LoadConfig(filepath.Join(dir, "config.json"))
			if err != nil {
				t.Fatal(err)
			}
			scores, err := importance.Load(filepath.Join(dir, "importance.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			p, err := NewPlan(cfg, scores, Targets{Hidden: pj.Hidden, Heads: pj.Heads, FFN: pj.FFN})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(p.Heads) != fmt.Sprint(pj.KeptHeads) {
				t.Fatalf("kept heads %v, want %v", p.Heads, pj.KeptHeads)
			}
			out := filepath.Join(t.TempDir(), "pruned")
			rep, err := Apply(context.Background(), p, dir, ApplyOptions{Out: out, MaxShard: 40000})
			if err != nil {
				t.Fatal(err)
			}
			m, err := model.Load(out, cpu.New(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if m.Config.HiddenSize != pj.Hidden || m.Config.HeadDim != cfg.HeadDim || rep.ParamsAfter >= rep.ParamsBefore {
				t.Fatalf("pruned config %+v", m.Config)
			}
			g := fixture.Goldens(t, name, "importance.safetensors")
			ids, shape := fixture.IDs(t, g, "input_ids")
			a, _ := m.NewActivations(len(ids), false)
			lg, err := m.Forward(a, model.Input{B: shape[0], T: shape[1], IDs: ids}, model.Options{})
			if err != nil {
				t.Fatal(err)
			}
			got, _ := m.Backend.ToFloat32(lg)
			want, _ := g.Float32("pruned_logits")
			if e := backendtest.RelErr(got, want); e > 1e-4 {
				t.Fatalf("pruned logits: relative error %.3g", e)
			}
			files, _ := filepath.Glob(filepath.Join(out, "model-*.safetensors"))
			if len(files) < 2 {
				t.Fatalf("expected a sharded output, got %v", files)
			}
			// Reading the source with direct I/O, or through the page
			// cache, writes the same bytes.
			for _, mode := range []string{ReadDirect, ReadBuffered} {
				out2 := filepath.Join(t.TempDir(), mode)
				if _, err := Apply(context.Background(), p, dir, ApplyOptions{Out: out2, MaxShard: 40000, Read: mode}); err != nil {
					t.Fatal(err)
				}
				for _, f := range files {
					a, _ := os.ReadFile(f)
					b, err := os.ReadFile(filepath.Join(out2, filepath.Base(f)))
					if err != nil || !bytes.Equal(a, b) {
						t.Fatalf("--read %s: %s differs (%v)", mode, filepath.Base(f), err)
					}
				}
			}
		})
	}
}

func TestTargetsValidated(t *testing.T) {
	dir := filepath.Join(fixtures, "nemotron-odd")
	cfg, _ := model.LoadConfig(filepath.Join(dir, "config.json"))
	scores, _ := importance.Load(filepath.Join(dir, "importance.safetensors"))
	cases := []struct {
		t    Targets
		want string
	}{
		{Targets{Hidden: 81}, "[1, 80]"},
		{Targets{Heads: 5}, "not a multiple of the 2 KV groups"},
		{Targets{Hidden: 42, Divisor: 8}, "multiple of --divisor 8"},
		{Targets{Layers: 4}, "--num-layers 4"},
		{Targets{DropLayers: []int{3}}, "layer 3 does not exist"},
		{Targets{Layers: 2, DropLayers: []int{0}}, "not both"},
		{Targets{DropLayers: []int{0, 1, 2}}, "every layer"},
	}
	for _, c := range cases {
		if _, err := NewPlan(cfg, scores, c.t); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.t, err, c.want)
		}
	}
	other, _ := importance.Load(filepath.Join(fixtures, "nemotron-tiny", "importance.safetensors"))
	if _, err := NewPlan(cfg, other, Targets{}); err == nil || !strings.Contains(err.Error(), "another model") {
		t.Fatalf("mismatched scores: %v", err)
	}
	// Depth: drop the least important layer by Block Importance.
	p, err := NewPlan(cfg, scores, Targets{Layers: 2})
	if err != nil {
		t.Fatal(err)
	}
	worst := 0
	for l, v := range scores.LayerBI {
		if v < scores.LayerBI[worst] {
			worst = l
		}
	}
	for _, l := range p.Layers {
		if l == worst {
			t.Fatalf("kept layers %v include the least important %d (BI %v)", p.Layers, worst, scores.LayerBI)
		}
	}
	// A failed prune leaves no output directory.
	out := filepath.Join(t.TempDir(), "out")
	p.Source = &model.Config{}
	*p.Source = *cfg
	p.Source.IntermediateSize++ // shapes no longer match the checkpoint
	if _, err := Apply(context.Background(), p, dir, ApplyOptions{Out: out}); err == nil {
		t.Fatal("mismatched checkpoint accepted")
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a failed prune left its output directory")
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".out.tmp-*"))
	if len(left) > 0 {
		t.Fatalf("temporary directories left: %v", left)
	}
	*p.Source = *cfg
	if _, err := Apply(context.Background(), p, dir, ApplyOptions{Out: out, Read: "mmap"}); err == nil || !strings.Contains(err.Error(), `read mode "mmap"`) {
		t.Fatalf("unknown read mode: %v", err)
	}
	// An interrupted prune stops with the context's error and leaves nothing.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Apply(ctx, p, dir, ApplyOptions{Out: out}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled prune: %v", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a canceled prune left its output directory")
	}
}

// TestDepthPruning drops layers and checks the result equals running the
// source model with those layers skipped.
func TestDepthPruning(t *testing.T) {
	dir := filepath.Join(fixtures, "nemotron-odd")
	cfg, _ := model.LoadConfig(filepath.Join(dir, "config.json"))
	scores, _ := importance.Load(filepath.Join(dir, "importance.safetensors"))
	p, err := NewPlan(cfg, scores, Targets{DropLayers: []int{1}})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "pruned")
	if _, err := Apply(context.Background(), p, dir, ApplyOptions{Out: out}); err != nil {
		t.Fatal(err)
	}
	pruned, _ := model.Load(out, cpu.New(), nil)
	src, _ := model.Load(dir, cpu.New(), nil)
	ids := []int32{5, 17, 200, 3, 99, 250, 1, 42}
	run := func(m *model.Model, skip []bool) []float32 {
		a, _ := m.NewActivations(len(ids), false)
		lg, err := m.Forward(a, model.Input{B: 1, T: len(ids), IDs: ids}, model.Options{Skip: skip})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := m.Backend.ToFloat32(lg)
		return v
	}
	a, b := run(pruned, nil), run(src, []bool{false, true, false})
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("logit %d: %v vs %v", i, a[i], b[i])
		}
	}
}

// TestBlockDepth: block-bi drops the one contiguous block of the lowest
// block importance, whatever the single layers' scores say.
func TestBlockDepth(t *testing.T) {
	cfg, err := model.ParseConfig([]byte(`{"architectures":["LlamaForCausalLM"],"vocab_size":50,"hidden_size":8,"num_hidden_layers":6,
		"num_attention_heads":2,"num_key_value_heads":1,"head_dim":4,"intermediate_size":12}`))
	if err != nil {
		t.Fatal(err)
	}
	s := &importance.Scores{Embedding: make([]float32, 8)}
	for range 6 {
		s.Head = append(s.Head, []float32{1, 2})
		s.Neuron = append(s.Neuron, make([]float32, 12))
	}
	// Single layers 0 and 5 look least important, but the block 2..4 is
	// the cheapest of the blocks of 3 and 1..2 of the blocks of 2.
	s.LayerBI = []float32{0.01, 0.5, 0.4, 0.3, 0.6, 0.02}
	s.BlockBI = make([][]float32, 6)
	for i := range 6 {
		for j := i; j < 6; j++ {
			s.BlockBI[i] = append(s.BlockBI[i], float32(j-i+1))
		}
		s.BlockBI[i][0] = s.LayerBI[i]
	}
	s.BlockBI[2][2] = 0.9 // layers 2..4
	s.BlockBI[1][1] = 0.7 // layers 1..2
	s.BlockBI[3][1] = 0.7 // layers 3..4: a tie, the earlier block wins
	for _, c := range []struct {
		metric string
		keep   int
		want   []int
	}{
		{"block-bi", 3, []int{0, 1, 5}},
		{"block-bi", 4, []int{0, 3, 4, 5}},
		{"block-bi", 5, []int{1, 2, 3, 4, 5}},
		{"block-bi", 6, []int{0, 1, 2, 3, 4, 5}},
		{"bi", 4, []int{1, 2, 3, 4}},
	} {
		t.Run(fmt.Sprintf("%s-keep%d", c.metric, c.keep), func(t *testing.T) {
			p, err := NewPlan(cfg, s, Targets{Layers: c.keep, DepthMetric: c.metric})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(p.Layers) != fmt.Sprint(c.want) {
				t.Fatalf("kept %v, want %v", p.Layers, c.want)
			}
		})
	}
	s.BlockBI = nil
	if _, err := NewPlan(cfg, s, Targets{Layers: 4, DepthMetric: "block-bi"}); err == nil || !strings.Contains(err.Error(), "no block importance") {
		t.Fatalf("scores without block importance: %v", err)
	}
}

// TestRandomScores: random pruning keeps the target shape, the same seed
// keeps the same structures, and different seeds keep different ones.
func TestRandomScores(t *testing.T) {
	cfg, _ := model.LoadConfig(filepath.Join(fixtures, "nemotron-odd", "config.json"))
	tg := Targets{Hidden: 40, Heads: 4, FFN: 100}
	plan := func(seed uint64) *Plan {
		p, err := NewPlan(cfg, RandomScores(cfg, seed), tg)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b, c := plan(1), plan(1), plan(2)
	if len(a.Hidden) != 40 || len(a.Heads[0]) != 4 || len(a.FFN[2]) != 100 || a.Target.HiddenSize != 40 {
		t.Fatalf("shape: %d channels, %d heads, %d neurons", len(a.Hidden), len(a.Heads[0]), len(a.FFN[2]))
	}
	if fmt.Sprint(a.Hidden, a.Heads, a.FFN) != fmt.Sprint(b.Hidden, b.Heads, b.FFN) {
		t.Fatal("the same seed kept different structures")
	}
	if fmt.Sprint(a.Hidden) == fmt.Sprint(c.Hidden) || fmt.Sprint(a.FFN) == fmt.Sprint(c.FFN) {
		t.Fatal("two seeds kept the same structures")
	}
	// Heads: 2 per KV group of 3, in every layer, not always the same ones.
	same := true
	for l := range a.Heads {
		if a.Heads[l][0] >= 3 || a.Heads[l][2] < 3 {
			t.Fatalf("layer %d heads %v: not 2 per KV group", l, a.Heads[l])
		}
		same = same && fmt.Sprint(a.Heads[l]) == fmt.Sprint(a.Heads[0])
	}
	if same && fmt.Sprint(a.Heads) == fmt.Sprint(c.Heads) {
		t.Fatal("random heads do not vary")
	}
}

// TestSearchMinitron4B: from the Nemotron-4 15B shape, the published
// Minitron-4B shape is inside the paper's search space at 4.19B parameters.
func TestSearchMinitron4B(t *testing.T) {
	src, err := model.ParseConfig([]byte(`{"architectures":["NemotronForCausalLM"],"vocab_size":256000,"hidden_size":6144,
		"num_hidden_layers":32,"num_attention_heads":48,"num_key_value_heads":8,"head_dim":128,"intermediate_size":24576}`))
	if err != nil {
		t.Fatal(err)
	}
	if total, _ := src.NumParams(); math.Abs(float64(total)-15.6e9) > 0.1e9 {
		t.Fatalf("Nemotron-15B shape has %d parameters, the paper says 15.6B", total)
	}
	cs, err := Search(src, 4.19e9, 0.05, PaperSpace())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range cs {
		if math.Abs(c.Deviation) > 0.05 {
			t.Fatalf("candidate outside the tolerance: %v", c)
		}
		if c.Layers == 32 && c.Hidden == 3072 && c.Heads == 24 && c.FFN == 9216 {
			found = true
			if math.Abs(float64(c.Params)-4.19e9) > 0.01e9 {
				t.Fatalf("Minitron-4B shape: %d parameters, published 4.19B", c.Params)
			}
		}
	}
	if !found || len(cs) < 3 {
		t.Fatalf("%d candidates, Minitron-4B found: %v", len(cs), found)
	}
}

// TestReadMode: auto reads a large source directly unless it is mostly
// cached, a small one through the cache; direct and buffered are obeyed.
func TestReadMode(t *testing.T) {
	for _, c := range []struct {
		mode     string
		size     int64
		resident float64
		want     bool
	}{
		{ReadAuto, 30 << 30, 0, true},
		{ReadAuto, 30 << 30, 0.3, true},
		{ReadAuto, 30 << 30, 0.9, false},
		{ReadAuto, 30 << 30, -1, false}, // the system cannot tell
		{"", 1 << 30, 0, true},
		{ReadAuto, 100 << 20, 0, false},
		{ReadDirect, 1, 1, true},
		{ReadBuffered, 30 << 30, 0, false},
	} {
		got, err := directIO(c.mode, c.size, func() float64 { return c.resident })
		if err != nil || got != c.want {
			t.Errorf("%q, %d bytes, %.1f cached: direct %v (%v), want %v", c.mode, c.size, c.resident, got, err, c.want)
		}
	}
}

// TestBF16Gather: pruning a bf16 checkpoint (scattered 2-byte columns
// gathered on all cores) gives exactly the bf16 rounding of pruning its
// float32 original (whole runs copied).
func TestBF16Gather(t *testing.T) {
	dir := filepath.Join(fixtures, "nemotron-odd")
	cfg, _ := model.LoadConfig(filepath.Join(dir, "config.json"))
	scores, err := importance.Load(filepath.Join(dir, "importance.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(dir, cpu.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	bf := t.TempDir()
	if err := m.Save(bf, backend.BF16, 1<<30); err != nil {
		t.Fatal(err)
	}
	p, err := NewPlan(cfg, scores, Targets{Hidden: cfg.HiddenSize/2 + 1, Heads: cfg.NumKVHeads, FFN: cfg.IntermediateSize/3 + 1})
	if err != nil {
		t.Fatal(err)
	}
	out32, out16 := filepath.Join(t.TempDir(), "f32"), filepath.Join(t.TempDir(), "bf16")
	if _, err := Apply(context.Background(), p, dir, ApplyOptions{Out: out32}); err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(context.Background(), p, bf, ApplyOptions{Out: out16}); err != nil {
		t.Fatal(err)
	}
	a, _ := checkpoints.Open(out32)
	defer a.Close()
	b, _ := checkpoints.Open(out16)
	defer b.Close()
	if len(a.Names()) != len(b.Names()) {
		t.Fatalf("%d tensors from f32, %d from bf16", len(a.Names()), len(b.Names()))
	}
	for _, name := range a.Names() {
		if info, _ := b.Info(name); info.DType != backend.BF16 {
			t.Fatalf("%s: %v, want the source's bf16", name, info.DType)
		}
		x, _ := a.Float32(name)
		y, err := b.Float32(name)
		if err != nil || len(x) != len(y) {
			t.Fatalf("%s: %d values from f32, %d from bf16 (%v)", name, len(x), len(y), err)
		}
		for i := range x {
			if want := backend.BF16ToF32(backend.F32ToBF16(x[i])); y[i] != want {
				t.Fatalf("%s[%d] = %v, want %v", name, i, y[i], want)
			}
		}
	}
}
