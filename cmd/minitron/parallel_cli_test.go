package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/backend/cuda/emu"
	"github.com/minitron/minitron/dist/disttest"
	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/model"
)

// Data-parallel distillation through the CLI, on the CPU stand-ins for
// the CUDA libraries and NCCL: two emulated GPUs in one process against
// one, two processes started with torchrun's variables against one
// process of two GPUs, and a run killed on two GPUs resumed on one.

// dpSetup prepares a dataset, a teacher and a distillation config of a
// student trained from scratch (tiny shapes: the stand-ins are slow).
func dpSetup(t *testing.T) string {
	t.Helper()
	dir, ds := goDataset(t)
	shape := func(hidden, inter int) string {
		return fmt.Sprintf(`{"architectures":["NemotronForCausalLM"],"vocab_size":4000,"hidden_size":%d,"num_hidden_layers":2,
"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"intermediate_size":%d,"initializer_range":0.05,"bos_token_id":1,"eos_token_id":2}`, hidden, inter)
	}
	tc, err := model.ParseConfig([]byte(shape(32, 64)))
	if err != nil {
		t.Fatal(err)
	}
	teacher, err := model.Random(tc, cpu.New(), 11)
	if err != nil {
		t.Fatal(err)
	}
	tdir := filepath.Join(dir, "teacher")
	os.MkdirAll(tdir, 0o755)
	if err := teacher.Save(tdir, backend.F32, 1<<30); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "student.json"), []byte(shape(16, 32)), 0o644)
	cfg := filepath.Join(dir, "distill.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`model:
  config: %s
data:
  datasets: [{path: %s, weight: 1}]
  seq_len: 16
  val_fraction: 0.05
train:
  micro_batch: 2
  accumulation: 2
  steps: 4
optimizer:
  lr: 1.0e-2
  warmup: 1
eval:
  every: 2
  batches: 3
checkpoint:
  every: 2
  keep: 2
teacher:
  model: %s
device: cuda
`, filepath.Join(dir, "student.json"), ds, tdir)), 0o644)
	return cfg
}

// dpProcess starts `minitron distill` on the stand-ins.
func dpProcess(lib, cfg, out string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], append([]string{"distill", "--config", cfg, "--out", out}, args...)...)
	cmd.Env = emu.Env(lib, append([]string{"MINITRON_RUN_MAIN=1", "MINITRON_EMU_NCCL_TIMEOUT=120"}, env...)...)
	return cmd
}

func dpRun(t *testing.T, lib, cfg, out string, env []string, args ...string) string {
	t.Helper()
	cmd := dpProcess(lib, cfg, out, env, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("minitron distill %s (%v): %v\n%s", strings.Join(args, " "), env, err, stderr.String())
	}
	return stderr.String()
}

// metricLines reads a run's metrics without the timing fields.
func metricLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var ms []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("metrics line %q: %v", l, err)
		}
		delete(m, "tok_per_s")
		delete(m, "elapsed_s")
		ms = append(ms, m)
	}
	return ms
}

// lossesNear compares the training and validation losses of two runs'
// metrics lines, relatively.
func lossesNear(t *testing.T, what string, a, b []map[string]any, tol float64) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d metrics lines vs %d", what, len(a), len(b))
	}
	worst := 0.0
	for i := range a {
		for _, k := range []string{"loss", "val_ce"} {
			x, ok1 := a[i][k].(float64)
			y, ok2 := b[i][k].(float64)
			if ok1 != ok2 || a[i]["step"] != b[i]["step"] {
				t.Fatalf("%s: line %d: %v vs %v", what, i, a[i], b[i])
			}
			if ok1 {
				worst = max(worst, math.Abs(x-y)/math.Abs(x))
			}
		}
	}
	t.Logf("%s: losses within %.3g", what, worst)
	if worst > tol {
		t.Fatalf("%s: losses differ by %.3g > %.3g relative", what, worst, tol)
	}
}

// sameRun checks that two runs' metrics are the same, bit for bit, but
// for the gradient norms: the CUDA backend adds the blocks' partial
// squared norms with atomics, in the order they finish, so the norm's
// last bits vary from run to run (it only scales the update when the
// norm exceeds optimizer.clip, which it does not here; the checkpoints'
// bytes are compared too).
func sameRun(t *testing.T, what string, a, b []map[string]any) {
	t.Helper()
	norms := func(ms []map[string]any) ([]map[string]any, []float64) {
		var out []map[string]any
		var gn []float64
		for _, m := range ms {
			c := map[string]any{}
			for k, v := range m {
				c[k] = v
			}
			if g, ok := c["grad_norm"].(float64); ok {
				gn = append(gn, g)
				delete(c, "grad_norm")
			}
			out = append(out, c)
		}
		return out, gn
	}
	x, gx := norms(a)
	y, gy := norms(b)
	if fmt.Sprint(x) != fmt.Sprint(y) || len(gx) != len(gy) {
		t.Fatalf("%s: the metrics differ:\n%v\nvs\n%v", what, a, b)
	}
	for i := range gx {
		if math.Abs(gx[i]-gy[i]) > 1e-9*gx[i] {
			t.Fatalf("%s: gradient norm %v vs %v", what, gx[i], gy[i])
		}
	}
}

func sameBytes(t *testing.T, a, b string) {
	t.Helper()
	x, err1 := os.ReadFile(a)
	y, err2 := os.ReadFile(b)
	if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ (%v, %v)", a, b, err1, err2)
	}
}

func TestDataParallelStandIns(t *testing.T) {
	lib := emu.Dir(t)
	cfg := dpSetup(t)
	dir := t.TempDir()
	gpus := func(n int) []string { return []string{fmt.Sprintf("MINITRON_EMU_GPUS=%d", n)} }

	// One GPU, and two in one process: the same global batch.
	one, two := filepath.Join(dir, "one"), filepath.Join(dir, "two")
	dpRun(t, lib, cfg, one, gpus(2), "--set", "device=cuda:0")
	log := dpRun(t, lib, cfg, two, gpus(2))
	if !strings.Contains(log, "data parallel: GPUs [0 1] as ranks 0 to 1 of 2") {
		t.Fatalf("the run on two GPUs does not say so:\n%s", log)
	}
	ref := metricLines(t, two)
	lossesNear(t, "two GPUs against one", metricLines(t, one), ref, 0.005)
	for _, f := range []string{"optimizer-00000-of-00002.safetensors", "optimizer-00001-of-00002.safetensors"} {
		if _, err := os.Stat(filepath.Join(two, "checkpoint-0000004", f)); err != nil {
			t.Fatalf("optimizer shard: %v", err)
		}
	}

	t.Run("all-bf16 on two GPUs against one", func(t *testing.T) {
		// bf16 gradients reduced by NCCL in bf16, bf16 moments rounded
		// stochastically, no master weights: the same trajectory up to
		// bf16 rounding.
		bf16 := []string{"--set", "optimizer.master_weights=false", "--set", "optimizer.grad_dtype=bf16", "--set", "optimizer.state_dtype=bf16"}
		one, two := filepath.Join(t.TempDir(), "one"), filepath.Join(t.TempDir(), "two")
		dpRun(t, lib, cfg, one, gpus(2), append(bf16, "--set", "device=cuda:0")...)
		dpRun(t, lib, cfg, two, gpus(2), bf16...)
		lossesNear(t, "all-bf16, two GPUs against one", metricLines(t, one), metricLines(t, two), 0.005)
	})

	t.Run("two processes", func(t *testing.T) {
		// torchrun's variables, one emulated GPU per process, meeting on
		// 127.0.0.1: bit for bit the run of one process with two GPUs.
		out := filepath.Join(t.TempDir(), "procs")
		port := disttest.FreePort(t)
		var wg sync.WaitGroup
		logs := make([]string, 2)
		errs := make([]error, 2)
		for r := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := dpProcess(lib, cfg, out, append(gpus(1), "WORLD_SIZE=2", fmt.Sprintf("RANK=%d", r), "LOCAL_RANK=0", "LOCAL_WORLD_SIZE=1",
					"MASTER_ADDR=127.0.0.1", "MASTER_PORT="+port), "--rendezvous-timeout", "2m")
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				errs[r] = cmd.Run()
				logs[r] = stderr.String()
			}()
		}
		wg.Wait()
		for r := range 2 {
			if errs[r] != nil {
				t.Fatalf("process %d: %v\n%s", r, errs[r], logs[r])
			}
		}
		if !strings.Contains(logs[1], "data parallel: process 1 of 2 (torchrun, ") || !strings.Contains(logs[1], "GPUs [0] as ranks 1 to 1 of 2") {
			t.Fatalf("process 1 does not say where it stands:\n%s", logs[1])
		}
		if strings.Contains(logs[1], "checkpoint") || strings.Contains(logs[1], "effective configuration") {
			t.Fatalf("process 1 logs what rank 0 logs:\n%s", logs[1])
		}
		sameRun(t, "two processes against one of two GPUs", ref, metricLines(t, out))
		for _, f := range []string{"model.safetensors", "optimizer-00000-of-00002.safetensors", "optimizer-00001-of-00002.safetensors"} {
			sameBytes(t, filepath.Join(two, "checkpoint-0000004", f), filepath.Join(out, "checkpoint-0000004", f))
		}
	})

	t.Run("killed on two GPUs, resumed on two and on one", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "killed")
		cmd := dpProcess(lib, cfg, out, gpus(2))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		killed := false
		for !killed {
			select {
			case err := <-done:
				t.Fatalf("the run ended before it could be killed (%v)", err)
			case <-time.After(20 * time.Millisecond):
				if _, err := os.Stat(filepath.Join(out, "checkpoint-0000002", "COMPLETE")); err == nil {
					cmd.Process.Kill()
					<-done
					killed = true
				}
			}
		}
		// A copy resumed on the same two GPUs: bit for bit the run that was
		// not killed.
		same := out + "-same"
		if b, err := exec.Command("cp", "-a", out, same).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v\n%s", err, b)
		}
		log := dpRun(t, lib, cfg, same, gpus(2))
		if !strings.Contains(log, "(step 2 of 4)") {
			t.Fatalf("the run on two GPUs did not resume from step 2:\n%s", log)
		}
		sameRun(t, "resumed on two GPUs", ref, metricLines(t, same))
		for _, f := range []string{"model.safetensors", "optimizer-00000-of-00002.safetensors", "optimizer-00001-of-00002.safetensors"} {
			sameBytes(t, filepath.Join(two, "checkpoint-0000004", f), filepath.Join(same, "checkpoint-0000004", f))
		}
		// On one GPU: the same step and data position.
		log = dpRun(t, lib, cfg, out, gpus(1))
		if !strings.Contains(log, "resuming from") || !strings.Contains(log, "(step 2 of 4)") {
			t.Fatalf("the run on one GPU did not resume:\n%s", log)
		}
		lossesNear(t, "resumed on one GPU", ref, metricLines(t, out), 0.005)
		var a, b struct {
			Tokens int64           `json:"tokens"`
			Cursor json.RawMessage `json:"data_cursor"`
		}
		for _, x := range []struct {
			dir string
			st  any
		}{{two, &a}, {out, &b}} {
			raw, err := os.ReadFile(filepath.Join(x.dir, "checkpoint-0000004", "state.json"))
			if err != nil {
				t.Fatal(err)
			}
			json.Unmarshal(raw, x.st)
		}
		if a.Tokens != b.Tokens || string(a.Cursor) != string(b.Cursor) {
			t.Fatalf("data position %s (%d tokens), want %s (%d)", b.Cursor, b.Tokens, a.Cursor, a.Tokens)
		}
	})

	t.Run("a process that never comes", func(t *testing.T) {
		start := time.Now()
		cmd := dpProcess(lib, cfg, filepath.Join(t.TempDir(), "alone"), append(gpus(1), "WORLD_SIZE=2", "RANK=1", "MASTER_ADDR=127.0.0.1", "MASTER_PORT="+disttest.FreePort(t)),
			"--rendezvous-timeout", "1s")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "process 1 could not meet rank 0 at 127.0.0.1:") {
			t.Fatalf("%v:\n%s", err, out)
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("gave up after %v", time.Since(start))
		}
	})
}

// TestClusterExamples: the cluster examples' configuration is valid and
// splits its global batch over 8, 16 and 32 GPUs; the scripts parse and
// run minitron distill with it.
func TestClusterExamples(t *testing.T) {
	const dir = "../../recipes/examples"
	cfg, err := distill.Load(filepath.Join(dir, "distill-minitron-4b.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if g := cfg.Train.MicroBatch * cfg.Train.Accumulation; g != 1152 || cfg.Data.SeqLen != 4096 {
		t.Errorf("global batch %d × %d, want the paper's 1152 × 4096", g, cfg.Data.SeqLen)
	}
	for _, gpus := range []int{8, 16, 32} {
		if cfg.Train.Accumulation%gpus != 0 {
			t.Errorf("accumulation %d does not divide among %d GPUs", cfg.Train.Accumulation, gpus)
		}
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	for _, s := range []string{"slurm-minitron-4b.sh", "torchrun-minitron-4b.sh"} {
		p := filepath.Join(dir, s)
		if out, err := exec.Command(bash, "-n", p).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", s, err, out)
		}
		b, _ := os.ReadFile(p)
		if !strings.Contains(string(b), "distill --config") || !strings.Contains(string(b), "distill-minitron-4b.yaml") {
			t.Errorf("%s does not run minitron distill with the example configuration", s)
		}
	}
}

func TestParseDevice(t *testing.T) {
	for _, c := range []struct {
		dev  string
		want deviceSpec
		err  string
	}{
		{dev: "cpu"},
		{dev: "cuda", want: deviceSpec{cuda: true}},
		{dev: "GPU", want: deviceSpec{cuda: true}},
		{dev: "cuda:3", want: deviceSpec{cuda: true, gpus: []int{3}}},
		{dev: "cuda:0,1, 2", want: deviceSpec{cuda: true, gpus: []int{0, 1, 2}}},
		{dev: "gpu:4,0", want: deviceSpec{cuda: true, gpus: []int{4, 0}}},
		{dev: "cuda:", err: "non-negative integers separated by commas"},
		{dev: "cuda:0,-1", err: "non-negative integers"},
		{dev: "cuda:1,1", err: "GPU 1 is listed twice"},
		{dev: "tpu", err: "unknown --device"},
	} {
		t.Run(c.dev, func(t *testing.T) {
			got, err := parseDevice(c.dev)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one saying %q", err, c.err)
				}
				return
			}
			if err != nil || got.cuda != c.want.cuda || fmt.Sprint(got.gpus) != fmt.Sprint(c.want.gpus) {
				t.Fatalf("%+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}
