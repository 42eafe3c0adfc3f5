package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend/backendtest"
	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/internal/fixture"
)

// calibFile writes the fixture's calibration_ids as input_ids.
func calibFile(t *testing.T, name string) string {
	t.Helper()
	ids, shape, err := fixture.Goldens(t, name, "importance.safetensors").Int64("calibration_ids")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "calib.safetensors")
	if err := checkpoints.WriteFile(p, []checkpoints.Entry{checkpoints.Int64Entry("input_ids", shape, ids)}, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestImportancePruneCommands drives importance, prune and logits as the
// acceptance checks do, against the fixtures.
func TestImportancePruneCommands(t *testing.T) {
	for _, name := range []string{"nemotron-tiny", "llama-tiny"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(fixtures, name)
			tmp := t.TempDir()
			scores := filepath.Join(tmp, "scores.safetensors")
			mustRun(t, "importance", "--model", dir, "--calib", calibFile(t, name), "--out", scores)
			got, _ := checkpoints.Open(scores)
			want, _ := checkpoints.Open(filepath.Join(dir, "importance.safetensors"))
			for _, n := range []string{"importance.head", "importance.neuron", "importance.embedding", "importance.layer_bi", "importance.layer_loss_without"} {
				g, err := got.Float32(n)
				if err != nil {
					t.Fatal(err)
				}
				w, _ := want.Float32(n)
				if e := rel(g, w); e > 1e-4 {
					t.Errorf("%s: relative error %.3g", n, e)
				}
			}
			got.Close()
			var pj struct {
				Hidden int `json:"hidden_size"`
				Heads  int `json:"num_attention_heads"`
				FFN    int `json:"intermediate_size"`
			}
			b, _ := os.ReadFile(filepath.Join(dir, "prune.json"))
			json.Unmarshal(b, &pj)
			out := filepath.Join(tmp, "pruned")
			mustRun(t, "prune", "--model", dir, "--scores", scores, "--hidden-size", fmt.Sprint(pj.Hidden),
				"--num-attention-heads", fmt.Sprint(pj.Heads), "--intermediate-size", fmt.Sprint(pj.FFN), "--out", out)
			checkReadable(t, out)
			lg := filepath.Join(tmp, "logits.safetensors")
			mustRun(t, "logits", "--model", out, "--input", filepath.Join(dir, "importance.safetensors"), "--output", lg)
			gl, _ := checkpoints.Open(lg)
			defer gl.Close()
			g, _ := gl.Float32("logits")
			w, _ := want.Float32("pruned_logits")
			want.Close()
			if e := rel(g, w); e > 1e-4 {
				t.Fatalf("pruned logits: relative error %.3g", e)
			}
		})
	}
}

var rel = backendtest.RelErr[float32]

func TestPruneBadInputs(t *testing.T) {
	dir := filepath.Join(fixtures, "nemotron-tiny")
	other := filepath.Join(fixtures, "nemotron-odd", "importance.safetensors")
	scores := filepath.Join(dir, "importance.safetensors")
	out := filepath.Join(t.TempDir(), "out")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"prune", "--model", dir, "--scores", other, "--hidden-size", "32", "--out", out}, "another model"},
		{[]string{"prune", "--model", dir, "--scores", scores, "--hidden-size", "128", "--out", out}, "[1, 64]"},
		{[]string{"prune", "--model", dir, "--scores", scores, "--num-attention-heads", "3", "--out", out}, "KV groups"},
		{[]string{"prune", "--model", dir, "--scores", scores, "--drop-layers", "x", "--out", out}, "not a layer number"},
		{[]string{"importance", "--model", dir, "--calib", filepath.Join(t.TempDir(), "missing.safetensors"), "--out", out}, "missing.safetensors"},
		{[]string{"importance", "--model", dir, "--calib", scores, "--out", out, "--seq-agg", "max"}, "aggregation"},
		{[]string{"prune", "search", "--model", dir, "--target-params", "3e4", "--tolerance", "0.9", "--layers", "2", "--heads", "2,4",
			"--hidden", "32,48", "--mlp-factors", "2", "--score-steps", "2", "--out", out}, "need --scores, --data and --out"},
		{[]string{"prune", "--model", dir, "--scores", scores, "--drop-layers", "3-1", "--out", out}, "a range like 16-30"},
		{[]string{"prune", "search", "--model", dir}, "give --target-params"},
		{[]string{"prune", "search", "--model", dir, "--drop-block", "2"}, "drop 1 to 1"},
		{[]string{"prune", "search", "--model", dir, "--drop-block", "1", "--metric", "bleu=x", "--scores", scores, "--data", dir, "--out", out}, `unknown task "bleu"`},
	}
	for _, c := range cases {
		r := run(t, "", c.args...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", c.args, r.code, r.stderr, c.want)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a failed command left its output")
	}
}

// TestConvertAndExportCommands: a PyTorch checkpoint converts and computes
// transformers' logits; exports appear only when complete.
func TestConvertAndExportCommands(t *testing.T) {
	tmp := t.TempDir()
	conv := filepath.Join(tmp, "conv")
	mustRun(t, "convert", "--from", "../../testdata/torch/bf16", "--out", conv)
	lg := filepath.Join(tmp, "lg.safetensors")
	mustRun(t, "logits", "--model", conv, "--input", filepath.Join(fixtures, "nemotron-tiny-bf16", "golden.safetensors"), "--output", lg)
	g, _ := checkpoints.Open(lg)
	defer g.Close()
	w, _ := checkpoints.Open(filepath.Join(fixtures, "nemotron-tiny-bf16", "golden.safetensors"))
	defer w.Close()
	gv, _ := g.Float32("logits")
	wv, _ := w.Float32("logits")
	if e := rel(gv, wv); e > 1e-4 {
		t.Fatalf("converted bf16 checkpoint: logits relative error %.3g", e)
	}
	r := run(t, "", "convert", "--from", tmp, "--out", filepath.Join(tmp, "x"))
	if r.code == 0 || !strings.Contains(r.stderr, "config.json") {
		t.Fatalf("convert without a checkpoint: %q", r.stderr)
	}
	hf := filepath.Join(tmp, "hf")
	mustRun(t, "export", "--model", conv, "--format", "hf", "--dtype", "f32", "--out", hf)
	r = run(t, "", "export", "--model", conv, "--format", "gguf", "--dtype", "q4_0", "--out", filepath.Join(tmp, "m.gguf"))
	if r.code == 0 || !strings.Contains(r.stderr, "q4_0") {
		t.Fatalf("bad gguf dtype: %q", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(tmp, "m.gguf")); err == nil {
		t.Fatal("a failed export left a file")
	}
}

func TestLayerList(t *testing.T) {
	for in, want := range map[string]string{"": "[]", "3": "[3]", "3,4": "[3 4]", "16-19": "[16 17 18 19]", "1, 5-6 ,9": "[1 5 6 9]"} {
		got, err := layerList(in)
		if err != nil || fmt.Sprint(got) != want && !(want == "[]" && got == nil) {
			t.Errorf("%q: %v %v, want %s", in, got, err, want)
		}
	}
}
