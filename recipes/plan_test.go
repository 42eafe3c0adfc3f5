package recipes

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/minitron/minitron/train"
)

// TestPlanMinitron4B: the paper's route to Minitron-4B, planned without
// any of its files, against the published figures: Nemotron-4 15B has
// 15.6B parameters and Minitron-4B-Base 4.19B (its config.json); each
// distillation is 94B tokens; its cost is about 6·N·D for the student and
// 2·N·D for the teacher's forward pass.
func TestPlanMinitron4B(t *testing.T) {
	r, err := Load("minitron-4b.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Plan(DefaultPlanOptions)
	if err != nil {
		t.Fatal(err)
	}
	var kinds, names []string
	for _, s := range p.Stages {
		kinds, names = append(kinds, s.Kind), append(names, s.Name)
	}
	if got := strings.Join(names, ","); got != "data,8b/importance,8b/prune,8b/distill,4b/importance,4b/prune,4b/distill,eval,export" {
		t.Fatalf("stages %s", got)
	}
	if got := strings.Join(kinds, ","); got != "data,importance,prune,distill,importance,prune,distill,eval,export" {
		t.Fatalf("kinds %s", got)
	}
	st := map[string]PlanStage{}
	for _, s := range p.Stages {
		st[s.Name] = s
	}
	within := func(what string, got, want, tol float64) {
		t.Helper()
		if math.Abs(got-want) > tol*want {
			t.Errorf("%s: %.4g, want %.4g ±%.0f%%", what, got, want, 100*tol)
		}
	}
	within("the 15B's parameters", float64(*st["8b/importance"].Params), 15.6e9, 0.005)
	within("the 4B's parameters", float64(*st["4b/prune"].Params), 4.19e9, 0.005)
	shape := func(s PlanStage) [4]int {
		return [4]int{*s.Shape.HiddenSize, *s.Shape.NumAttentionHeads, *s.Shape.IntermediateSize, *s.Shape.NumLayers}
	}
	if got := shape(st["8b/prune"]); got != [4]int{4096, 48, 16384, 32} {
		t.Errorf("8B shape %v", got)
	}
	if got := shape(st["4b/distill"]); got != [4]int{3072, 24, 9216, 32} {
		t.Errorf("4B shape %v", got)
	}
	// The 4B is pruned from the 8B's student and taught by the 15B.
	if s := st["4b/prune"]; s.Source != "runs/minitron-4b/8b/distill/final" {
		t.Errorf("4b/prune reads %s", s.Source)
	}
	for _, n := range []string{"8b/distill", "4b/distill"} {
		s := st[n]
		if s.Teacher != "../checkpoints/nemotron-4-15b" || *s.TeacherParams != *st["8b/importance"].Params {
			t.Errorf("%s: teacher %s (%d parameters)", n, s.Teacher, *s.TeacherParams)
		}
		step := int64(1152 * 4096)
		if tok := *s.Tokens; tok < 94e9 || tok >= 94e9+step || tok%step != 0 {
			t.Errorf("%s: %d tokens, want whole steps of %d covering 94B", n, tok, step)
		}
		student := float64(*s.Params)
		within(n+" FLOPs", *s.FLOPs, (6*student+2*15.6e9)*94e9, 0.15)
		within(n+" GPU-hours", *s.GPUHours, *s.FLOPs/(989e12*0.4)/3600, 1e-9)
	}
	if *st["8b/prune"].FLOPs != 0 || st["data"].Tokens != nil {
		t.Errorf("prune %v FLOPs, data %v tokens", *st["8b/prune"].FLOPs, st["data"].Tokens)
	}
	// The JSON form has the documented keys, null where unknown.
	b, _ := json.Marshal(p)
	var doc struct {
		Stages []map[string]json.RawMessage `json:"stages"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || len(doc.Stages) != len(p.Stages) {
		t.Fatalf("JSON %v: %s", err, b)
	}
	for _, s := range doc.Stages {
		for _, k := range []string{"name", "kind", "source", "teacher", "shape", "out", "tokens"} {
			if _, ok := s[k]; !ok {
				t.Fatalf("stage %s has no %q: %v", s["name"], k, s)
			}
		}
		var sh map[string]*int
		if err := json.Unmarshal(s["shape"], &sh); err != nil || len(sh) != 4 || !hasKeys(sh, "hidden_size", "num_attention_heads", "intermediate_size", "num_layers") {
			t.Fatalf("shape %s", s["shape"])
		}
	}
}

func hasKeys[V any](m map[string]V, keys ...string) bool {
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return false
		}
	}
	return true
}

// TestPlanTeacherCorrection: the Llama recipe corrects its teacher with
// the paper's settings, and every later stage uses the corrected teacher.
func TestPlanTeacherCorrection(t *testing.T) {
	r, err := Load("llama-3.1-minitron-4b-width.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Plan(DefaultPlanOptions)
	if err != nil {
		t.Fatal(err)
	}
	tc := p.Stages[1]
	if tc.Kind != KindTeacherCorrection || *tc.Tokens < 100e9 || *tc.Tokens >= 100e9+1152*8192 || !strings.Contains(tc.Note, "peak LR 6e-05, 120 warmup steps") {
		t.Fatalf("teacher correction %+v (%d tokens)", tc, *tc.Tokens)
	}
	// Llama-3.1-8B: 8.03B parameters; its 4B-Width student 4.5B (2408.11796 Table 1).
	if n := float64(*tc.Params); math.Abs(n-8.03e9) > 0.01e9 {
		t.Errorf("teacher parameters %v", n)
	}
	for _, s := range p.Stages[2:5] {
		if s.Kind == KindDistill && s.Teacher != "runs/llama-3.1-minitron-4b-width/teacher-correction/final" ||
			s.Kind != KindDistill && s.Source != "runs/llama-3.1-minitron-4b-width/teacher-correction/final" && s.Kind != KindPrune {
			t.Errorf("%s reads %s, teacher %s", s.Name, s.Source, s.Teacher)
		}
		if s.Kind == KindPrune && math.Abs(float64(*s.Params)-4.5e9) > 0.05e9 {
			t.Errorf("student parameters %d", *s.Params)
		}
	}
}

// TestPlanUnknownShape: without teacher_arch the teacher's shape is
// unknown; the prune targets' own dimensions still show.
func TestPlanUnknownShape(t *testing.T) {
	r, err := Load("minitron-4b.yaml", []string{"teacher_arch=null"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Plan(DefaultPlanOptions)
	if err != nil {
		t.Fatal(err)
	}
	imp, pr := p.Stages[1], p.Stages[2]
	if imp.Shape != (PlanShape{}) || imp.Params != nil || imp.FLOPs != nil {
		t.Errorf("importance of an unknown teacher: %+v", imp)
	}
	if pr.Shape.HiddenSize == nil || *pr.Shape.HiddenSize != 4096 || pr.Shape.NumLayers == nil || pr.Params != nil {
		t.Errorf("prune of an unknown teacher: %+v", pr.Shape)
	}
	if !strings.Contains(p.Text(), "unknown (the model shapes are not all known; give teacher_arch)") {
		t.Errorf("text:\n%s", p.Text())
	}
}

// TestPlanDepth: the 4B-Depth route keeps 16 of Llama-3.1-8B's layers at
// full width: 4.5B parameters (2408.11796 Table 1).
func TestPlanDepth(t *testing.T) {
	r, err := Load("llama-3.1-minitron-4b-depth.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Plan(DefaultPlanOptions)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Stages {
		if s.Kind != KindPrune {
			continue
		}
		if *s.Shape.NumLayers != 16 || *s.Shape.HiddenSize != 4096 || math.Abs(float64(*s.Params)-4.5e9) > 0.05e9 {
			t.Fatalf("pruned to %d layers, hidden %d: %d parameters", *s.Shape.NumLayers, *s.Shape.HiddenSize, *s.Params)
		}
		return
	}
	t.Fatal("no prune stage")
}

// TestPlanMemoryFitsH200: every training stage of the shipped GPU recipes
// fits one H200 at its micro-batch, and its plan holds at least the
// optimizer state derived by hand: per student parameter 2 bytes of bf16
// weights, 4 of float32 master weights, and 4 (float32) or 2 (bf16) each
// for the gradient and both Adam moments, plus 2 bytes per parameter of
// an online teacher.
func TestPlanMemoryFitsH200(t *testing.T) {
	for _, tc := range []struct {
		recipe string
		stages int // training stages
	}{
		{"minitron-4b.yaml", 2}, {"minitron-4b-oneshot.yaml", 1}, {"minitron-8b.yaml", 1},
		{"llama-3.1-minitron-4b-width.yaml", 2}, {"llama-3.1-minitron-4b-depth.yaml", 2},
	} {
		t.Run(tc.recipe, func(t *testing.T) {
			r, err := Load(tc.recipe, nil)
			if err != nil {
				t.Fatal(err)
			}
			p, err := r.Plan(DefaultPlanOptions)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, s := range p.Stages {
				if s.Kind != KindDistill && s.Kind != KindTeacherCorrection {
					continue
				}
				n++
				if s.Memory == nil || s.H200MicroBatch == nil {
					t.Fatalf("%s: no memory plan", s.Name)
				}
				if *s.H200MicroBatch < s.MicroBatch {
					t.Errorf("%s: micro-batch %d does not fit one H200 (at most %d): %.1f GiB", s.Name, s.MicroBatch, *s.H200MicroBatch, float64(*s.Memory)/(1<<30))
				}
				var c *train.OptimizerConfig
				if s.Kind == KindDistill {
					c = &r.distillConfig(stepIndex(t, r, s.Name), "", nil).Optimizer
				} else {
					c = &r.correctionConfig(nil).Optimizer
				}
				per := int64(2 + 4) // bf16 weights, float32 master weights
				for _, dt := range []string{c.GradDType, c.StateDType, c.StateDType} {
					if dt == "bf16" {
						per += 2
					} else {
						per += 4
					}
				}
				least := per * *s.Params
				if s.TeacherParams != nil {
					least += 2 * *s.TeacherParams
				}
				if *s.Memory < least {
					t.Errorf("%s: %d bytes, below the optimizer state and teacher alone (%d)", s.Name, *s.Memory, least)
				}
			}
			if n != tc.stages {
				t.Errorf("%d training stages with a memory plan, want %d", n, tc.stages)
			}
		})
	}
}

// stepIndex is the index of the step a plan stage named "STEP/distill"
// (or "distill") belongs to.
func stepIndex(t *testing.T, r *Recipe, stage string) int {
	t.Helper()
	name, _, ok := strings.Cut(stage, "/")
	if !ok {
		name = ""
	}
	for i, s := range r.Steps {
		if s.Name == name {
			return i
		}
	}
	t.Fatalf("no step for stage %s", stage)
	return -1
}
