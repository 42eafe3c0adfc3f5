package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/model"
)

// TestLogitsCommand: `minitron logits` reproduces transformers' logits.
func TestLogitsCommand(t *testing.T) {
	for _, name := range []string{"nemotron-odd", "llama-tiny-bf16"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(fixtures, name)
			out := filepath.Join(t.TempDir(), "out.safetensors")
			mustRun(t, "logits", "--model", dir, "--input", filepath.Join(dir, "golden.safetensors"), "--output", out)
			got, err := checkpoints.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer got.Close()
			want, _ := checkpoints.Open(filepath.Join(dir, "golden.safetensors"))
			defer want.Close()
			g, err := got.Float32("logits", 2, 16, map[string]int{"nemotron-odd": 300, "llama-tiny-bf16": 512}[name])
			if err != nil {
				t.Fatal(err)
			}
			w, _ := want.Float32("logits")
			if e := rel(g, w); e > 1e-4 {
				t.Fatalf("relative error %.3g", e)
			}
		})
	}
}

// TestLogitsGrads: `minitron logits --grads` writes transformers' loss and
// gradients.
func TestLogitsGrads(t *testing.T) {
	dir := filepath.Join(fixtures, "nemotron-odd")
	out := filepath.Join(t.TempDir(), "out.safetensors")
	mustRun(t, "logits", "--model", dir, "--input", filepath.Join(dir, "golden.safetensors"), "--output", out, "--grads")
	errs := goldenErrors(t, out, filepath.Join(dir, "golden.safetensors"), "loss", "grad.")
	for name, e := range errs {
		if e > 1e-4 {
			t.Errorf("%s: relative error %.3g", name, e)
		}
	}
	if len(errs) != 1+34 { // loss and the 34 parameters of the 3-layer model
		t.Fatalf("compared %d tensors", len(errs))
	}
}

// goldenErrors returns the relative error of every tensor of the output
// file out against the golden file whose name is one of names or starts
// with one ending in ".".
func goldenErrors(t *testing.T, out, golden string, names ...string) map[string]float64 {
	t.Helper()
	got, err := checkpoints.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	want, err := checkpoints.Open(golden)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	errs := map[string]float64{}
	for _, name := range want.Names() {
		match := false
		for _, n := range names {
			match = match || name == n || (strings.HasSuffix(n, ".") && strings.HasPrefix(name, n))
		}
		if !match {
			continue
		}
		g, err := got.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		w, _ := want.Float32(name)
		errs[name] = rel(g, w)
	}
	return errs
}

// TestSampleGreedyIDs: greedy `sample --ids` prints transformers' greedy ids.
func TestSampleGreedyIDs(t *testing.T) {
	dir := filepath.Join(fixtures, "nemotron-tiny")
	g, err := checkpoints.Open(filepath.Join(dir, "golden.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	prompt, _, _ := g.Int64("greedy_prompt")
	want, _, _ := g.Int64("greedy_ids")
	var ps []string
	for _, v := range prompt {
		ps = append(ps, fmt.Sprint(v))
	}
	r := mustRun(t, "sample", "--model", dir, "--prompt-ids", strings.Join(ps, ","), "--temperature", "0",
		"--max-new-tokens", fmt.Sprint(len(want)-len(prompt)), "--ids", "--ignore-eos")
	var ws []string
	for _, v := range want {
		ws = append(ws, fmt.Sprint(v))
	}
	if got := strings.TrimSpace(r.stdout); got != strings.Join(ws, " ") {
		t.Fatalf("got  %s\nwant %s", got, strings.Join(ws, " "))
	}
	if !strings.Contains(r.stderr, "tok/s") {
		t.Fatalf("no speed report on stderr: %q", r.stderr)
	}
}

func TestTokenizeCommand(t *testing.T) {
	model := "../../testdata/tokenizer/spm-nemotron-style.model"
	b, _ := os.ReadFile("../../testdata/tokenizer/spm-nemotron-style.golden.json")
	var g struct {
		Samples []struct {
			Text string  `json:"text"`
			IDs  []int32 `json:"ids"`
		} `json:"samples"`
	}
	json.Unmarshal(b, &g)
	s := g.Samples[0]
	r := mustRun(t, "tokenize", "--tokenizer", model, "--text", s.Text)
	if strings.TrimSpace(r.stdout) != joinIDs(s.IDs) {
		t.Fatalf("--text: %q, want %q", r.stdout, joinIDs(s.IDs))
	}
	r = mustRun(t, "tokenize", "--tokenizer", model, "--decode", "--text", joinIDs(s.IDs))
	if strings.TrimSuffix(r.stdout, "\n") != s.Text {
		t.Fatalf("--decode: %q", r.stdout)
	}
	// JSON lines, in order, many of them (parallel), BOS/EOS on request.
	var in strings.Builder
	for i := range 1000 {
		smp := g.Samples[i%len(g.Samples)]
		t, _ := json.Marshal(map[string]string{"text": smp.Text})
		in.Write(append(t, '\n'))
	}
	r = run(t, in.String(), "tokenize", "--tokenizer", model, "--jsonl", "--bos", "--eos")
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 1000 {
		t.Fatalf("%d lines out", len(lines))
	}
	for i, l := range lines {
		var o struct{ IDs []int32 }
		json.Unmarshal([]byte(l), &o)
		want := append(append([]int32{1}, g.Samples[i%len(g.Samples)].IDs...), 2)
		if joinIDs(o.IDs) != joinIDs(want) {
			t.Fatalf("line %d: %v, want %v", i, o.IDs, want)
		}
	}
	// And back.
	r = run(t, strings.Join(lines, "\n"), "tokenize", "--tokenizer", model, "--jsonl", "--decode")
	first := strings.SplitN(r.stdout, "\n", 2)[0]
	if want, _ := json.Marshal(map[string]string{"text": s.Text}); first != string(want) {
		t.Fatalf("decode jsonl: %s, want %s", first, want)
	}
	r = run(t, "{\"text\": 3}\n", "tokenize", "--tokenizer", model, "--jsonl")
	if r.code == 0 || !strings.Contains(r.stderr, "line 1") {
		t.Fatalf("bad line not reported: %q", r.stderr)
	}
	// A text without tokens has an empty list of ids.
	if r := mustRun(t, "tokenize", "--tokenizer", model, "--jsonl"); r.stdout != "" {
		t.Fatalf("no input: %q", r.stdout)
	}
	r = run(t, "{\"text\": \"\"}\n", "tokenize", "--tokenizer", model, "--jsonl")
	if r.code != 0 || r.stdout != "{\"ids\":[]}\n" {
		t.Fatalf("empty text: %q %s", r.stdout, r.stderr)
	}
	// Ids outside the vocabulary of 4000 are errors naming the id, the
	// size and the line.
	for _, c := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{"--decode", "--text", "333 99999 1992"}, "--text: token id 99999 is outside the vocabulary of 4000 tokens"},
		{"{\"ids\": [1, -3]}\n", []string{"--decode", "--jsonl"}, "stdin line 1: token id -3 is outside the vocabulary of 4000 tokens"},
		{"333 1992\n\n5 4000\n", []string{"--decode", "--lines"}, "stdin line 3: token id 4000 is outside the vocabulary of 4000 tokens"},
	} {
		r := run(t, c.stdin, append([]string{"tokenize", "--tokenizer", model}, c.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: exit %d, %q; want %q", c.args, r.code, r.stderr, c.want)
		}
	}
}

const bigConfig = `{"architectures":["NemotronForCausalLM"],"vocab_size":32000,"hidden_size":768,
	"num_hidden_layers":6,"num_attention_heads":12,"num_key_value_heads":4,"intermediate_size":3072}`

func init() {
	// writeBig writes a random bf16 checkpoint of bigConfig and an input file into args[0].
	helpers["writeBig"] = func(args []string) error {
		cfg, err := model.ParseConfig([]byte(bigConfig))
		if err != nil {
			return err
		}
		m, err := model.Random(cfg, cpu.New(), 7)
		if err != nil {
			return err
		}
		if err := m.Save(args[0], backend.BF16, 64<<20); err != nil {
			return err
		}
		ids := make([]int64, 4*64)
		for i := range ids {
			ids[i] = int64(i * 37 % 32000)
		}
		return checkpoints.WriteFile(filepath.Join(args[0], "in.safetensors"), []checkpoints.Entry{checkpoints.Int64Entry("input_ids", []int{4, 64}, ids)}, nil)
	}
}

// TestLogitsMemory: running a bf16 checkpoint holds the float32 weights once,
// plus activations, within 10%.
func TestLogitsMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 170 MB checkpoint")
	}
	cfg, err := model.ParseConfig([]byte(bigConfig))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	runHelper(t, "writeBig", dir)
	r := mustRun(t, "logits", "--model", dir, "--input", filepath.Join(dir, "in.safetensors"), "--output", filepath.Join(dir, "out.safetensors"))
	weights := cfg.WeightBytes()
	acts := cfg.InferenceActivationBytes(4*64, 4*64)
	// The logits are also copied to the host and encoded for writing.
	out := int64(2 * 4 * 4 * 64 * 32000)
	limit := int64(float64(weights+acts+out) * 1.1)
	t.Logf("peak RSS %d MB; float32 weights %d MB, activations %d MB, output %d MB, limit %d MB",
		r.maxRSS>>20, weights>>20, acts>>20, out>>20, limit>>20)
	if r.maxRSS > limit {
		t.Fatalf("peak RSS %d MB exceeds %d MB", r.maxRSS>>20, limit>>20)
	}
	r = mustRun(t, "inspect", dir)
	if r.maxRSS > 64<<20 {
		t.Fatalf("inspect read the weights: peak RSS %d MB", r.maxRSS>>20)
	}
}
