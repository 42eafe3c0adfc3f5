package recipes

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/eval"
	"github.com/minitron/minitron/internal/fixture"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/train"
)

const tokPath = "../testdata/tokenizer/spm-nemotron-style.model"

// setup writes a small random teacher (with the Go-source tokenizer) and a
// recipe using Go's strings package as data.
func setup(t *testing.T) string {
	t.Helper()
	// The recipe reads $GOROOT/src/strings.
	t.Setenv("GOROOT", fixture.GoRoot(t))
	dir := t.TempDir()
	cfg, err := model.ParseConfig([]byte(`{"architectures":["NemotronForCausalLM"],"vocab_size":4000,"hidden_size":32,"num_hidden_layers":3,
		"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"intermediate_size":64,"bos_token_id":1,"eos_token_id":2}`))
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Random(cfg, cpu.New(), 1)
	if err != nil {
		t.Fatal(err)
	}
	teacher := filepath.Join(dir, "teacher")
	os.MkdirAll(teacher, 0o755)
	if err := m.Save(teacher, backend.BF16, 1<<30); err != nil {
		t.Fatal(err)
	}
	tok, _ := os.ReadFile(tokPath)
	os.WriteFile(filepath.Join(teacher, "tokenizer.model"), tok, 0o644)
	recipe := filepath.Join(dir, "r.yaml")
	os.WriteFile(recipe, []byte(`name: test
out: `+filepath.Join(dir, "run")+`
teacher: teacher
data:
  datasets:
    - name: strings
      inputs: [$GOROOT/src/strings]
      include: ["*.go"]
      weight: 1
  seq_len: 32
  val_fraction: 0.05
calibration:
  samples: 8
importance:
  depth: true
prune:
  hidden_size: 16
  num_attention_heads: 2
  intermediate_size: 32
  num_layers: 2
distill:
  train: {micro_batch: 4, steps: 6}
  optimizer: {lr: 1.0e-3, warmup: 2}
  eval: {every: 3, batches: 2}
  checkpoint: {every: 3, keep: 1}
eval:
  samples: [{prompt: "func ", max_new_tokens: 5, temperature: 0}]
  tasks:
    - {name: arc_challenge, path: `+evalData(t, "arc_challenge")+`, num_fewshot: 1}
    - {name: winogrande, path: `+evalData(t, "winogrande")+`, num_fewshot: 0, limit: 1}
`), 0o644)
	return recipe
}

// evalData is the absolute path of a benchmark's test data.
func evalData(t *testing.T, task string) string {
	p, err := filepath.Abs(filepath.Join("..", "testdata", "eval", "jsonl", task))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRecipeStages(t *testing.T) {
	path := setup(t)
	r, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Run(context.Background(), r, RunOptions{Backend: cpu.New()})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Skipped) != 0 || len(sum.Report.Models) != 3 || len(sum.Report.Samples) != 1 {
		t.Fatalf("summary %+v", sum)
	}
	// Every output the recipe lists is there.
	outs := r.Outputs()
	if len(outs) != 7 { // dataset, scores, pruned, run, student, report, hf
		t.Fatalf("outputs %+v", outs)
	}
	for _, o := range outs {
		if _, err := os.Stat(o.Path); err != nil {
			t.Errorf("%s (%s stage): %v", o.What, o.Stage, err)
		}
	}
	st, err := model.LoadConfig(filepath.Join(r.Out, "export", "hf", "config.json"))
	if err != nil || st.HiddenSize != 16 || st.NumLayers != 2 || st.NumHeads != 2 {
		t.Fatalf("exported student %+v %v", st, err)
	}
	if !strings.HasPrefix(sum.Report.Samples[0].Text, "func ") {
		t.Fatalf("sample %q", sum.Report.Samples[0].Text)
	}
	for _, m := range sum.Report.Models {
		if len(m.Tasks) != 2 || m.Tasks[0].Task != "arc_challenge" || m.Tasks[0].Docs != 2 || m.Tasks[0].Shots != 1 ||
			m.Tasks[1].Task != "winogrande" || m.Tasks[1].Docs != 1 {
			t.Fatalf("%s: tasks %+v", m.Name, m.Tasks)
		}
	}
	if tb := sum.Report.Table(); !strings.Contains(tb, "winogrande(0)") || !strings.Contains(tb, "arc_challenge(1) acc_norm") {
		t.Fatalf("table:\n%s", tb)
	}
	// The student's val ce is the distillation's last val_ce: the same
	// held-out sequences (up to the bf16 rounding of the exported model).
	ms, err := train.ReadMetrics(filepath.Join(r.Out, "distill"))
	if err != nil {
		t.Fatal(err)
	}
	var last float64
	for _, m := range ms {
		if m.ValCE != nil {
			last = *m.ValCE
		}
	}
	if got := sum.Report.Models[2].ValCE; math.Abs(got-last) > 2e-3*last {
		t.Fatalf("student val ce %v in the table, %v in the distillation", got, last)
	}
	// A rerun skips every stage but data (which checks its inputs itself).
	sum, err = Run(context.Background(), r, RunOptions{Backend: cpu.New()})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(sum.Skipped, ",") != "importance,prune,distill,eval,export" {
		t.Fatalf("rerun skipped %v", sum.Skipped)
	}
	// A distillation setting changed after the fact is refused, naming the
	// recipe's key and both values; nothing is deleted.
	r1, _ := Load(path, []string{"distill.kd.temperature=2"})
	if _, err := Run(context.Background(), r1, RunOptions{Backend: cpu.New()}); err == nil ||
		!strings.Contains(err.Error(), "distill.kd.temperature: 1 (the run's) → 2 (now)") || !strings.Contains(err.Error(), "--from distill") {
		t.Fatalf("a changed temperature: %v", err)
	}
	// A longer distillation resumes where the run stopped.
	r1, _ = Load(path, []string{"distill.train.steps=8"})
	if sum, err = Run(context.Background(), r1, RunOptions{Backend: cpu.New()}); err != nil || strings.Join(sum.Skipped, ",") != "importance,prune" {
		t.Fatalf("a longer distillation: skipped %v, %v", sum, err)
	}
	if ms, _ := train.ReadMetrics(filepath.Join(r.Out, "distill")); len(ms) == 0 || ms[len(ms)-1].Step != 8 {
		t.Fatalf("the distillation did not go on to step 8")
	}
	// Changing the prune target redoes prune, not importance; the
	// distillation of the former student is not resumed with the new one:
	// --from distill starts it over.
	r2, _ := Load(path, []string{"prune.intermediate_size=48"})
	if _, err := Run(context.Background(), r2, RunOptions{Backend: cpu.New()}); err == nil || !strings.Contains(err.Error(), "the pruned student") ||
		!strings.Contains(err.Error(), "not the same content") {
		t.Fatalf("after changing the prune target: %v", err)
	}
	sum, err = Run(context.Background(), r2, RunOptions{Backend: cpu.New(), From: "distill"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(sum.Skipped, ",") != "importance,prune" {
		t.Fatalf("after changing the prune target, skipped %v", sum.Skipped)
	}
	// --from redoes a stage; --until stops.
	sum, err = Run(context.Background(), r2, RunOptions{Backend: cpu.New(), From: "eval", Until: "eval"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(sum.Skipped, ",") != "importance,prune,distill" {
		t.Fatalf("--from eval --until eval skipped %v", sum.Skipped)
	}
}

func TestRecipeErrors(t *testing.T) {
	path := setup(t)
	cases := []struct {
		sets []string
		want string
	}{
		{[]string{"teacher=missing"}, "not a model directory"},
		{[]string{"data.datasets=[{name: x, path: nowhere, weight: 1}]"}, "not a prepared dataset"},
		{[]string{"prune.num_attention_heads=3"}, "not a multiple of the teacher's 2 KV groups"},
		{[]string{"prune.hidden_size=64"}, "prune.hidden_size 64 must be in [0, 32]"},
		{[]string{"distill.optimizer.schedule=exp"}, "schedule"},
		{[]string{"distill.bogus=1"}, "--set distill.bogus=1: distill.bogus: unknown key"},
		{[]string{"distill.train.micro_bacth=1"}, "did you mean distill.train.micro_batch?"},
		{[]string{"distill.train.steps=four hundred"}, `distill.train.steps: want an integer, got "four hundred"`},
		{[]string{"distill.train.steps=-5"}, "distill.train.steps -5 must be positive"},
		{[]string{"distill.kd.temperature=0"}, "distill.kd.temperature 0 must be positive"},
		{[]string{"eval.tasks=[{name: bogus, path: .}]"}, `eval.tasks[0]: unknown task "bogus"`},
		{[]string{"eval.tasks=[{name: mmlu, path: nowhere}]"}, "eval.tasks[0] (mmlu): no data at"},
	}
	for _, c := range cases {
		r, err := Load(path, c.sets)
		if err == nil {
			err = r.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.sets, err, c.want)
		}
	}
	// A recipe without a teacher hears about the recipe's key only.
	r, err := Load(path, []string{"teacher="})
	if err == nil {
		err = r.Validate()
	}
	if err == nil || !strings.Contains(err.Error(), "teacher: no teacher model directory") || strings.Contains(err.Error(), "teacher.") {
		t.Errorf("no teacher: %v", err)
	}
	r, _ = Load(path, nil)
	if _, err := Run(context.Background(), r, RunOptions{Backend: cpu.New(), From: "quantize"}); err == nil || !strings.Contains(err.Error(), "unknown stage") {
		t.Fatalf("unknown stage: %v", err)
	}
	if _, err := os.Stat(r.Out); err == nil {
		t.Fatal("an invalid run created its output directory")
	}
}

// TestReportTable: the final table has the layout of the papers' Table 2.
func TestReportTable(t *testing.T) {
	acc := func(v float64) eval.Metric { return eval.Metric{Value: v} }
	norm := acc(0.75)
	rep := &Report{Models: []ModelReport{
		{Name: "teacher", Params: 15_600_000_000, NonEmbParams: 12_500_000_000, TrainTokens: -1, ValCE: 1.5, Perplexity: 4.48,
			Tasks: []*eval.TaskResult{{Task: "hellaswag", Shots: 10, Acc: acc(0.6), AccNorm: &norm}, {Task: "winogrande", Shots: 5, Acc: acc(0.74)}}},
		{Name: "student (distilled)", Params: 4_190_000_000, NonEmbParams: 2_600_000_000, TrainTokens: 94_000_000_000, ValCE: 2, Perplexity: 7.39,
			Tasks: []*eval.TaskResult{{Task: "winogrande", Shots: 5, Acc: acc(0.7)}, {Task: "humaneval", Samples: 20, PassAt: map[int]eval.Metric{1: acc(0.233)}}}},
	}}
	// A 28-character label column, then one right-aligned column per
	// model, as wide as the longest name and two more.
	var want string
	for _, r := range [][3]string{
		{"", "teacher", "student (distilled)"},
		{"Total params", "15.6B", "4.2B"},
		{"Non-emb. params", "12.5B", "2.6B"},
		{"Training tokens", "-", "94.0B"},
		{"winogrande(5)", "74.0", "70.0"},
		{"hellaswag(10) acc_norm", "75.0", "-"},
		{"humaneval(n=20)(0) pass@1", "-", "23.3"},
		{"val ce", "1.5000", "2.0000"},
		{"Perplexity", "4.48", "7.39"},
	} {
		want += fmt.Sprintf("%-28s%21s%21s\n", r[0], r[1], r[2])
	}
	if got := rep.Table(); got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}
