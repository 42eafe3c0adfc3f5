package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunPlan: --plan works from the recipe alone (its teacher and data
// are not on this machine) and --json prints the documented fields.
func TestRunPlan(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile("../../recipes/minitron-4b.yaml")
	if err != nil {
		t.Fatal(err)
	}
	recipe := filepath.Join(dir, "r.yaml")
	os.WriteFile(recipe, b, 0o644)
	r := mustRun(t, "run", recipe, "--plan", "--json", "--mfu", "0.5")
	var p struct {
		MFU    float64 `json:"mfu"`
		Stages []struct {
			Name, Kind, Source, Teacher, Out string
			Shape                            map[string]*int
			Tokens                           *int64
		} `json:"stages"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if p.MFU != 0.5 || len(p.Stages) != 9 || p.Stages[6].Kind != "distill" || *p.Stages[6].Shape["hidden_size"] != 3072 ||
		!strings.HasSuffix(p.Stages[6].Teacher, "nemotron-4-15b") || *p.Stages[6].Tokens < 94e9 {
		t.Fatalf("plan %+v", p)
	}
	if _, err := os.Stat("runs"); err == nil {
		t.Fatal("--plan created the run directory")
	}
	r = mustRun(t, "run", recipe, "--plan")
	for _, want := range []string{"4b/distill (distill)", "teacher  " + filepath.Join(filepath.Dir(dir), "checkpoints/nemotron-4-15b"), "GPU-hours"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("plan text lacks %q:\n%s", want, r.stdout)
		}
	}
	if r := run(t, "", "run", recipe, "--json"); r.code == 0 || !strings.Contains(r.stderr, "--json goes with --plan") {
		t.Errorf("--json alone: exit %d, %s", r.code, r.stderr)
	}
}
