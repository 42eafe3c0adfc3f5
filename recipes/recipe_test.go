package recipes

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/eval"
	"github.com/minitron/minitron/internal/fixture"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/prune"
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
	// A rerun skips every stage, data included, and leaves its marker.
	before, _ := os.ReadFile(r.markerPath("data"))
	var log strings.Builder
	sum, err = Run(context.Background(), r, RunOptions{Backend: cpu.New(), Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(sum.Skipped, ",") != "data,importance,prune,distill,eval,export" {
		t.Fatalf("rerun skipped %v", sum.Skipped)
	}
	if after, _ := os.ReadFile(r.markerPath("data")); string(after) != string(before) {
		t.Fatalf("the rerun rewrote the data marker:\n%s\n%s", before, after)
	}
	if strings.Contains(log.String(), "preparing") || !strings.Contains(log.String(), "stage data       up to date") {
		t.Fatalf("rerun log:\n%s", log.String())
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
	if sum, err = Run(context.Background(), r1, RunOptions{Backend: cpu.New()}); err != nil || strings.Join(sum.Skipped, ",") != "data,importance,prune" {
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
	if strings.Join(sum.Skipped, ",") != "data,importance,prune" {
		t.Fatalf("after changing the prune target, skipped %v", sum.Skipped)
	}
	// --from redoes a stage; --until stops.
	sum, err = Run(context.Background(), r2, RunOptions{Backend: cpu.New(), From: "eval", Until: "eval"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(sum.Skipped, ",") != "data,importance,prune,distill" {
		t.Fatalf("--from eval --until eval skipped %v", sum.Skipped)
	}
}

// errorCase is a set of overrides and the error it must cause.
type errorCase struct {
	sets []string
	want string
}

// checkErrors loads the recipe with each case's overrides and validates it.
func checkErrors(t *testing.T, path string, cases []errorCase) {
	t.Helper()
	for _, c := range cases {
		r, err := Load(path, c.sets)
		if err == nil {
			err = r.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.sets, err, c.want)
		}
	}
}

func TestRecipeErrors(t *testing.T) {
	path := setup(t)
	cases := []errorCase{
		{[]string{"teacher=missing"}, "not a model directory"},
		{[]string{"data.datasets=[{name: x, path: nowhere, weight: 1}]"}, "not a prepared dataset"},
		{[]string{"prune.num_attention_heads=3"}, "not a multiple of the source's 2 KV groups"},
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
	checkErrors(t, path, cases)
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

// chainRecipe is a recipe of two chained steps after a teacher correction:
// the teacher (hidden 32, 4 heads, MLP 64, 3 layers) is corrected, pruned
// to hidden 24 and distilled (step a), and a's student is pruned to
// hidden 16, 2 heads, MLP 32, 2 layers and distilled from the teacher with
// the intermediate-state loss (step b).
func chainRecipe(t *testing.T) string {
	path := setup(t)
	b, _ := os.ReadFile(path)
	text := strings.Replace(string(b), "prune:\n  hidden_size: 16\n  num_attention_heads: 2\n  intermediate_size: 32\n  num_layers: 2\n", `teacher_correction:
  enabled: true
  pretrain_lr: 5.0e-3
  train: {micro_batch: 4, steps: 4}
  optimizer: {warmup: 1}
  eval: {every: 0, batches: 1}
  checkpoint: {every: 2, keep: 1}
steps:
  a:
    prune: {hidden_size: 24, intermediate_size: 48}
  b:
    source: a
    prune: {hidden_size: 16, num_attention_heads: 2, intermediate_size: 32, num_layers: 2}
    distill:
      train: {steps: 4}
      kd:
        intermediate: {layers: [[2, 3]], site: norm, embedding: true}
`, 1)
	if text == string(b) {
		t.Fatal("the test recipe changed; update chainRecipe")
	}
	os.WriteFile(path, []byte(text), 0o644)
	return path
}

func TestRecipeChain(t *testing.T) {
	path := chainRecipe(t)
	r, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "data,teacher-correction,a/importance,a/prune,a/distill,b/importance,b/prune,b/distill,eval,export"
	if got := strings.Join(r.StageNames(), ","); got != want {
		t.Fatalf("stages %s, want %s", got, want)
	}
	// Step b inherits the recipe's settings it does not override.
	if a, b := r.Steps[0], r.Steps[1]; a.Source != RefTeacher || b.Source != "a" || b.Teacher != RefTeacher ||
		b.Distill.Train.Steps != 4 || a.Distill.Train.Steps != 6 || b.Distill.Train.MicroBatch != 4 || b.Distill.Optimizer.LR != 1e-3 ||
		b.Prune.NumLayers != 2 || a.Prune.NumLayers != 0 || b.Calibration.Samples != 8 {
		t.Fatalf("steps %+v\n%+v", a, b)
	}
	// A step without settings takes the recipe's and chains on the last.
	if r3, err := Load(path, []string{"steps.c=null"}); err != nil || len(r3.Steps) != 3 || r3.Steps[2].Source != "b" ||
		r3.Steps[2].Distill.Train.Steps != 6 || r3.Steps[2].Prune.HiddenSize != 0 {
		t.Fatalf("an empty step: %v %+v", err, r3.Steps)
	}
	var log strings.Builder
	sum, err := Run(context.Background(), r, RunOptions{Backend: cpu.New(), Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	corrected := filepath.Join(r.Out, "teacher-correction", "final")
	// Step a pruned the corrected teacher; step b pruned a's student and
	// distilled from the corrected teacher.
	for dir, src := range map[string]string{"a": corrected, "b": filepath.Join(r.Out, "a", "distill", "final")} {
		rep, err := prune.ReadReport(filepath.Join(r.Out, dir, "pruned"))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Source != src {
			t.Errorf("step %s pruned %s, want %s", dir, rep.Source, src)
		}
	}
	if !strings.Contains(log.String(), "distilled 4 steps (512 tokens) from "+corrected) {
		t.Errorf("step b's distillation: log\n%s", log.String())
	}
	// The projection of b's intermediate loss starts at the teacher's
	// channels: a's selection of b's selection.
	ra, _ := prune.ReadReport(filepath.Join(r.Out, "a", "pruned"))
	rb, _ := prune.ReadReport(filepath.Join(r.Out, "b", "pruned"))
	var composed []int
	for _, c := range rb.Kept.Hidden {
		composed = append(composed, ra.Kept.Hidden[c])
	}
	if ch, err := r.channelMap(1); err != nil || fmt.Sprint(ch) != fmt.Sprint(composed) {
		t.Errorf("channels %v (%v), want %v", ch, err, composed)
	}
	if ch, err := r.channelMap(0); err != nil || fmt.Sprint(ch) != fmt.Sprint(ra.Kept.Hidden) {
		t.Errorf("step a's channels %v (%v), want %v", ch, err, ra.Kept.Hidden)
	}
	st, err := model.LoadConfig(filepath.Join(sum.Student, "config.json"))
	if err != nil || st.HiddenSize != 16 || st.NumLayers != 2 || st.NumHeads != 2 || st.IntermediateSize != 32 {
		t.Fatalf("final student %+v %v", st, err)
	}
	var names []string
	for _, m := range sum.Report.Models {
		names = append(names, m.Name)
	}
	if got := strings.Join(names, "; "); got != "teacher; teacher (corrected); a: pruned, before distillation; a: student (distilled); b: pruned, before distillation; b: student (distilled)" {
		t.Fatalf("eval rows: %s", got)
	}
	// A rerun skips everything. A change in step a's shape redoes a/prune,
	// and its distillation is not resumed with the new student: the run
	// says so, naming --from a/distill, which redoes a and all after it.
	if sum, err = Run(context.Background(), r, RunOptions{Backend: cpu.New()}); err != nil || len(sum.Skipped) != len(r.StageNames()) {
		t.Fatalf("rerun: skipped %v, %v", sum.Skipped, err)
	}
	r2, _ := Load(path, []string{"steps.a.prune.intermediate_size=40"})
	if _, err = Run(context.Background(), r2, RunOptions{Backend: cpu.New()}); err == nil || !strings.Contains(err.Error(), "--from a/distill") {
		t.Fatalf("after changing step a's shape: %v", err)
	}
	if sum, err = Run(context.Background(), r2, RunOptions{Backend: cpu.New(), From: "a/distill"}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(sum.Skipped, ","); got != "data,teacher-correction,a/importance,a/prune" {
		t.Fatalf("after changing step a's shape, skipped %s", got)
	}
	if _, err := Run(context.Background(), r2, RunOptions{Backend: cpu.New(), Until: "distill"}); err == nil || !strings.Contains(err.Error(), "a/distill, b/distill") {
		t.Fatalf("--until distill with two distill stages: %v", err)
	}
}

func TestRecipeStepErrors(t *testing.T) {
	path := chainRecipe(t)
	checkErrors(t, path, []errorCase{
		{[]string{"steps.b.prune.bogus=1"}, "field bogus not found in steps.b.prune"},
		{[]string{"steps.a.source=b"}, `"b" is step 2, not an earlier one`},
		{[]string{"steps.b.prune.hidden_size=28"}, "steps.b: prune.hidden_size 28 must be in [0, 24]"},
		{[]string{"steps.b.teacher=nowhere"}, "not a model directory"},
		{[]string{"teacher_correction.pretrain_lr=0"}, "teacher_correction: set pretrain_lr"},
		{[]string{"steps.b.calibration.seq_len=64"}, "longer than data.seq_len 32"},
		{[]string{"teacher_arch=gpt-5"}, "not a known architecture"},
		{[]string{"teacher_arch=minitron-4b"}, "teacher_arch (NemotronForCausalLM, hidden 3072, 24 heads, MLP 9216, 32 layers, vocab 256000) is not the teacher's shape"},
	})
	// An unknown key in a step names its line in the recipe file.
	b, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(b), "    source: a\n", "    source: a\n    sorce: a\n", 1)), 0o644)
	if _, err := Load(path, nil); err == nil || !strings.Contains(err.Error(), "field sorce not found in steps.b") || !regexp.MustCompile(`line \d+`).MatchString(err.Error()) {
		t.Fatalf("misspelt key: %v", err)
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
