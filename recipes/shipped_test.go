package recipes

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestShippedRecipes: every recipe file parses, and validation fails only
// because the big teachers and datasets are not on this machine.
func TestShippedRecipes(t *testing.T) {
	files, _ := filepath.Glob("*.yaml")
	if len(files) < 4 {
		t.Fatalf("recipes: %v", files)
	}
	shapes := map[string][3]int{
		"minitron-4b": {3072, 24, 9216}, "minitron-8b": {4096, 48, 16384}, "llama-3.1-minitron-4b-width": {3072, 32, 9216},
	}
	for _, f := range files {
		r, err := Load(f, nil)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if want, ok := shapes[r.Name]; ok {
			if got := [3]int{r.Prune.HiddenSize, r.Prune.NumAttentionHeads, r.Prune.IntermediateSize}; got != want {
				t.Errorf("%s: shape %v, want %v", f, got, want)
			}
			if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "teacher") {
				t.Errorf("%s: validation %v: want only the missing teacher and data", f, err)
			}
		}
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
		"minitron-4b.yaml":                 "Minitron-4B-Base from Nemotron-4 15B",
		"minitron-8b.yaml":                 "Minitron-8B-Base from Nemotron-4 15B",
		"llama-3.1-minitron-4b-width.yaml": "Llama-3.1-Minitron-4B-Width from Llama-3.1-8B",
	} {
		if got[f] != want {
			t.Errorf("%s: %q, want %q", f, got[f], want)
		}
	}
}
