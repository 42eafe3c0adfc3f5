package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minitron/minitron/internal/fixture"
)

const tinyNemotron = `{"architectures":["NemotronForCausalLM"],"vocab_size":4000,"hidden_size":32,"num_hidden_layers":2,
"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"intermediate_size":64,"initializer_range":0.05,
"bos_token_id":1,"eos_token_id":2}`

// goDataset prepares a small real dataset (Go's strings package) in a
// new folder dir, as dir/ds.
func goDataset(t *testing.T) (dir, ds string) {
	t.Helper()
	src := fixture.GoSource(t, "strings")
	dir = t.TempDir()
	ds = filepath.Join(dir, "ds")
	mustRun(t, "data", "prepare", "--tokenizer", "../../testdata/tokenizer/spm-nemotron-style.model", "--input", src, "--include", "*.go", "--out", ds)
	return dir, ds
}

// trainSetup prepares a small real dataset and a training config.
func trainSetup(t *testing.T) (cfg string) {
	t.Helper()
	dir, ds := goDataset(t)
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(tinyNemotron), 0o644)
	cfg = filepath.Join(dir, "train.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`model:
  config: %s
  tokenizer: ../../testdata/tokenizer/spm-nemotron-style.model
data:
  datasets: [{path: %s, weight: 1}]
  seq_len: 32
  val_fraction: 0.05
train:
  micro_batch: 4
  steps: 24
optimizer:
  lr: 3.0e-3
  warmup: 4
eval:
  every: 6
  batches: 2
checkpoint:
  every: 4
  keep: 2
`, filepath.Join(dir, "config.json"), ds)), 0o644)
	return cfg
}

type metricLine struct {
	Step     int      `json:"step"`
	Loss     *float64 `json:"loss"`
	ValCE    *float64 `json:"val_ce"`
	LR       *float64 `json:"lr"`
	GradNorm *float64 `json:"grad_norm"`
	Tokens   int64    `json:"tokens"`
}

// lossLog is the deterministic part of a run's metrics, as text.
func lossLog(t *testing.T, dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m metricLine
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("bad metrics line %q", l)
		}
		d, _ := json.Marshal(m)
		out.Write(append(d, '\n'))
	}
	return out.String()
}

// metricsStep is the step of the last complete line of a run's metrics log
// (0 before the first).
func metricsStep(dir string) int {
	b, _ := os.ReadFile(filepath.Join(dir, "metrics.jsonl"))
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 2; i >= 0; i-- { // the last element follows the last newline
		var m metricLine
		if json.Unmarshal([]byte(lines[i]), &m) == nil {
			return m.Step
		}
	}
	return 0
}

// writingCheckpoint reports whether a checkpoint is being written (its
// temporary directory exists).
func writingCheckpoint(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, ".checkpoint-*.tmp-*"))
	return len(m) > 0
}

// TestTrainSurvivesSIGKILL kills `minitron train` at fixed points of its
// progress (between checkpoints, during a checkpoint write, right after
// resuming) and reruns it until it finishes: the final weights and the
// per-step loss log are bit-identical to an uninterrupted run's. The kill
// points are states of the run directory, not times, so a slow or loaded
// machine kills at the same places.
func TestTrainSurvivesSIGKILL(t *testing.T) {
	cfg := trainSetup(t)
	ref := filepath.Join(t.TempDir(), "ref")
	mustRun(t, "train", "--config", cfg, "--out", ref)
	out := filepath.Join(t.TempDir(), "killed")
	// Each attempt is killed when its condition holds; the last one runs
	// to the end. Checkpoints are every 4 steps of 24.
	kill := []struct {
		what string
		now  func() bool
	}{
		{"at step 3, before the first checkpoint", func() bool { return metricsStep(out) >= 3 }},
		{"while a checkpoint is written", func() bool { return writingCheckpoint(out) || metricsStep(out) >= 10 }},
		{"at step 14, between checkpoints", func() bool { return metricsStep(out) >= 14 }},
		{"during start-up after resuming", func() bool { return true }},
		{"at step 19 or while checkpoint 20 is written", func() bool { return writingCheckpoint(out) && metricsStep(out) >= 18 || metricsStep(out) >= 19 }},
	}
	kills := 0
	for attempt := 0; attempt <= len(kill); attempt++ {
		cmd := exec.Command(os.Args[0], "train", "--config", cfg, "--out", out)
		cmd.Env = append(os.Environ(), "MINITRON_RUN_MAIN=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if attempt == len(kill) {
			if err := <-done; err != nil {
				t.Fatalf("run failed: %v\n%s", err, stderr.String())
			}
			break
		}
		tick := time.NewTicker(time.Millisecond)
	wait:
		for {
			select {
			case err := <-done:
				t.Fatalf("attempt %d finished (%v) before it was killed %s\n%s", attempt, err, kill[attempt].what, stderr.String())
			case <-tick.C:
				if kill[attempt].now() {
					cmd.Process.Kill()
					<-done
					kills++
					t.Logf("killed %s (step %d logged)", kill[attempt].what, metricsStep(out))
					break wait
				}
			}
		}
		tick.Stop()
	}
	if kills != len(kill) {
		t.Fatalf("%d kills, want %d", kills, len(kill))
	}
	for _, f := range []string{"model.safetensors", "optimizer.safetensors"} {
		a, _ := os.ReadFile(filepath.Join(ref, "checkpoint-0000024", f))
		b, _ := os.ReadFile(filepath.Join(out, "checkpoint-0000024", f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("%s differs from the uninterrupted run's", f)
		}
	}
	if a, b := lossLog(t, ref), lossLog(t, out); a != b {
		t.Fatalf("loss logs differ:\n%s\nvs\n%s", a, b)
	}
	checkReadable(t, out)
	// The exported model samples.
	res := mustRun(t, "sample", "--model", filepath.Join(out, "final"), "--prompt", "func ", "--max-new-tokens", "8", "--seed", "1")
	if !strings.HasPrefix(res.stdout, "func ") {
		t.Fatalf("sample: %q", res.stdout)
	}
}
