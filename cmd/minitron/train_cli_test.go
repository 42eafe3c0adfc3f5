package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const tinyNemotron = `{"architectures":["NemotronForCausalLM"],"vocab_size":4000,"hidden_size":32,"num_hidden_layers":2,
"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"intermediate_size":64,"initializer_range":0.05,
"bos_token_id":1,"eos_token_id":2}`

// goDataset prepares a small real dataset (Go's strings package) in a
// new folder dir, as dir/ds.
func goDataset(t *testing.T) (dir, ds string) {
	t.Helper()
	src := filepath.Join(runtime.GOROOT(), "src", "strings")
	if _, err := os.Stat(src); err != nil {
		t.Skip("no Go source tree")
	}
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
	ValLoss  *float64 `json:"val_loss"`
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

// TestTrainSurvivesSIGKILL kills `minitron train` at random moments (during
// steps and checkpoint writes alike) and reruns it until it finishes: the
// final weights and the per-step loss log are bit-identical to an
// uninterrupted run's.
func TestTrainSurvivesSIGKILL(t *testing.T) {
	cfg := trainSetup(t)
	ref := filepath.Join(t.TempDir(), "ref")
	start := time.Now()
	mustRun(t, "train", "--config", cfg, "--out", ref)
	full := time.Since(start)
	out := filepath.Join(t.TempDir(), "killed")
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	kills := 0
	for attempt := 0; ; attempt++ {
		if attempt > 60 {
			t.Fatal("the run never finished")
		}
		cmd := exec.Command(os.Args[0], "train", "--config", cfg, "--out", out)
		cmd.Env = append(os.Environ(), "MINITRON_RUN_MAIN=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run failed: %v\n%s", err, stderr.String())
			}
			t.Logf("finished after %d kills", kills)
			goto finished
		case <-time.After(time.Duration(float64(full) * (0.03 + 0.4*r.Float64()))):
			if kills >= 3 && r.IntN(2) == 0 {
				// Enough kills: let this one finish.
				if err := <-done; err != nil {
					t.Fatalf("run failed: %v\n%s", err, stderr.String())
				}
				t.Logf("finished after %d kills", kills)
				goto finished
			}
			cmd.Process.Kill()
			<-done
			kills++
		}
	}
finished:
	if kills < 3 {
		t.Fatalf("only %d kills", kills)
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
	// The exported model samples.
	res := mustRun(t, "sample", "--model", filepath.Join(out, "final"), "--prompt", "func ", "--max-new-tokens", "8", "--seed", "1")
	if !strings.HasPrefix(res.stdout, "func ") {
		t.Fatalf("sample: %q", res.stdout)
	}
}
