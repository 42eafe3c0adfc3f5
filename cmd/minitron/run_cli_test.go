package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/minitron/minitron/data"
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

// tinyGoDataset prepares a dataset of n lines of Go with the tiny teacher's
// tokenizer, in a temporary directory.
func tinyGoDataset(t *testing.T, n int) (dir, ds string) {
	t.Helper()
	dir = t.TempDir()
	var text strings.Builder
	for i := range n {
		fmt.Fprintf(&text, "func f%d() int { return %d }\n", i, i*i)
	}
	os.WriteFile(filepath.Join(dir, "in.go"), []byte(text.String()), 0o644)
	ds = filepath.Join(dir, "ds")
	mustRun(t, "data", "prepare", "--tokenizer", "../../models/tiny-teacher", "--input", filepath.Join(dir, "in.go"), "--out", ds)
	return dir, ds
}

// TestCacheTeacherCost: cache-teacher prints the disk cost before it
// starts, and warns below the top-k the Minitron paper found lossy.
func TestCacheTeacherCost(t *testing.T) {
	dir, ds := tinyGoDataset(t, 40)
	teacher := "../../models/tiny-teacher"
	for _, c := range []struct {
		k    string
		warn bool
	}{{"16", true}, {"128", false}} {
		r := mustRun(t, "distill", "cache-teacher", "--teacher", teacher, "--data", ds, "--seq-len", "8", "--top-k", c.k, "--out", filepath.Join(dir, "cache"+c.k))
		k, _ := strconv.Atoi(c.k)
		m := regexp.MustCompile(`caching top-(\d+) of (\d+) sequences of 8 tokens: (\d+) bytes per token`).FindStringSubmatch(r.stderr)
		if m == nil || m[1] != c.k || m[3] != strconv.Itoa(8*k) {
			t.Errorf("top-k %s: no cost line:\n%s", c.k, r.stderr)
		}
		if warned := strings.Contains(r.stderr, "warning: --top-k"); warned != c.warn {
			t.Errorf("top-k %s: warned %v:\n%s", c.k, warned, r.stderr)
		}
	}
}

// TestCalibrationSplit: importance --val-fraction draws only training
// sequences of the dataset.
func TestCalibrationSplit(t *testing.T) {
	_, ds := tinyGoDataset(t, 400)
	d, err := data.Open(ds)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const T = 4
	_, val, err := d.Split(T, 0.3)
	if err != nil {
		t.Fatal(err)
	}
	isVal := map[int64]bool{}
	for i := range val.Count {
		isVal[val.Index(i)] = true
	}
	n := int(d.Sequences(T) - val.Count)
	_, _, _, meta, err := calibration(ds, n, T, 1, 0.3)
	if err != nil {
		t.Fatal(err)
	}
	var idx []int64
	json.Unmarshal([]byte(meta["calibration_indices"]), &idx)
	if len(idx) != n || !strings.HasPrefix(meta["calibration_split"], "train") {
		t.Fatalf("%d indices, split %q", len(idx), meta["calibration_split"])
	}
	for _, i := range idx {
		if isVal[i] {
			t.Fatalf("validation sequence %d drawn", i)
		}
	}
}
