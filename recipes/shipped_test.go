package recipes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minitron/minitron/internal/fixture"
)

// TestShippedRecipes: every recipe file parses and plans; the big ones
// reach the published shapes and fail validation only because their
// teachers and datasets are not on this machine; the tiny ones validate.
func TestShippedRecipes(t *testing.T) {
	files, _ := filepath.Glob("*.yaml")
	if len(files) < 7 {
		t.Fatalf("recipes: %v", files)
	}
	// The final student's shape: hidden, heads, MLP.
	shapes := map[string][3]int{
		"minitron-4b": {3072, 24, 9216}, "minitron-4b-oneshot": {3072, 24, 9216}, "minitron-8b": {4096, 48, 16384},
		"llama-3.1-minitron-4b-width": {3072, 32, 9216}, "llama-3.1-minitron-4b-depth": {0, 0, 0}, "tiny": {96, 4, 384}, "tiny-chain": {96, 4, 384},
	}
	// The tiny recipes read $GOROOT/src (minitron sets it when unset).
	goroot := fixture.GoRoot(t)
	t.Setenv("GOROOT", goroot)
	_, srcErr := os.Stat(filepath.Join(goroot, "src"))
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			r, err := Load(f, nil)
			if err != nil {
				t.Fatal(err)
			}
			want, ok := shapes[r.Name]
			if !ok {
				t.Fatalf("no expected shape for recipe %s", r.Name)
			}
			last := r.Steps[len(r.Steps)-1].Prune
			if got := [3]int{last.HiddenSize, last.NumAttentionHeads, last.IntermediateSize}; got != want {
				t.Errorf("shape %v, want %v", got, want)
			}
			p, err := r.Plan(DefaultPlanOptions)
			if err != nil {
				t.Fatal(err)
			}
			if ex := p.Stages[len(p.Stages)-1]; ex.Params == nil || ex.FLOPs == nil {
				t.Errorf("the plan does not know the student's size: %+v", ex)
			}
			err = r.Validate()
			if strings.HasPrefix(r.Name, "tiny") {
				if err != nil && srcErr == nil {
					t.Errorf("validation: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), "teacher") {
				t.Errorf("validation %v: want only the missing teacher and data", err)
			}
		})
	}
}

// TestShippedList: every recipe file is listed with the first phrase of
// its opening comment.
func TestShippedList(t *testing.T) {
	got := map[string]string{}
	for _, r := range Shipped() {
		got[r.File] = r.Summary
	}
	files, _ := filepath.Glob("*.yaml")
	if len(got) != len(files) {
		t.Fatalf("listed %v, files %v", got, files)
	}
	for f, want := range map[string]string{
		"tiny.yaml":                        "A tiny Go-source teacher pruned to half its width and distilled, the default recipe",
		"minitron-4b.yaml":                 "Minitron-4B-Base from Nemotron-4 15B, the way the paper made it",
		"minitron-8b.yaml":                 "Minitron-8B-Base from Nemotron-4 15B",
		"llama-3.1-minitron-4b-width.yaml": "Llama-3.1-Minitron-4B-Width from Llama-3.1-8B",
	} {
		if got[f] != want {
			t.Errorf("%s: %q, want %q", f, got[f], want)
		}
	}
}
