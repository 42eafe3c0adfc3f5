package train

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/eval"
	"github.com/minitron/minitron/internal/fixture"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

const tokPath = "../testdata/tokenizer/spm-nemotron-style.model"

const tinyConfig = `{"architectures":["NemotronForCausalLM"],"vocab_size":4000,"hidden_size":32,"num_hidden_layers":2,
"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"intermediate_size":64,"initializer_range":0.05,
"bos_token_id":1,"eos_token_id":2}`

var (
	corpusOnce sync.Once
	corpusDir  string
	corpusErr  error
)

// goCorpus prepares a small real dataset (Go's strings package) once.
func goCorpus(t testing.TB) string {
	t.Helper()
	src := fixture.GoSource(t, "strings")
	corpusOnce.Do(func() {
		tok, err := tokenizer.LoadSentencePiece(tokPath)
		if err != nil {
			corpusErr = err
			return
		}
		corpusDir, corpusErr = os.MkdirTemp("", "minitron-train-corpus-")
		if corpusErr != nil {
			return
		}
		_, corpusErr = data.Prepare(context.Background(), data.PrepareOptions{Inputs: []string{src}, Include: []string{"*.go"},
			Out: corpusDir, Tokenizer: tok, TokenizerPath: tokPath, AddEOS: true})
	})
	if corpusErr != nil {
		t.Fatal(corpusErr)
	}
	return corpusDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if corpusDir != "" {
		os.RemoveAll(corpusDir)
	}
	os.Exit(code)
}

func tinyRun(t *testing.T, steps int) *Config {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	os.WriteFile(cfgPath, []byte(tinyConfig), 0o644)
	c := Default()
	c.Model.Config = cfgPath
	c.Model.InitSeed = 3
	c.Model.Tokenizer = tokPath
	c.Data.Datasets = []Dataset{{Path: goCorpus(t), Weight: 1}}
	c.Data.SeqLen = 32
	c.Data.ValFraction = 0.05
	c.Train.MicroBatch = 4
	c.Train.Steps = steps
	c.Optimizer.LR = 3e-3
	c.Optimizer.MinLR = 3e-4
	c.Optimizer.Warmup = 5
	c.Eval.Every = 5
	c.Eval.Batches = 2
	c.Checkpoint.Every = 3
	c.Checkpoint.Keep = 2
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return &c
}

func TestLRSchedule(t *testing.T) {
	c := Default()
	c.Optimizer.LR, c.Optimizer.MinLR, c.Optimizer.Warmup = 1, 0.1, 10
	cases := []struct {
		sched string
		step  int
		want  float64
	}{
		{"cosine", 5, 0.5}, {"cosine", 10, 1}, {"cosine", 60, 0.55}, {"cosine", 110, 0.1},
		{"linear", 60, 0.55}, {"linear", 110, 0.1}, {"constant", 80, 1},
	}
	for _, k := range cases {
		c.Optimizer.Schedule = k.sched
		if got := c.LR(k.step, 110); math.Abs(got-k.want) > 1e-12 {
			t.Errorf("%s step %d: lr %v, want %v", k.sched, k.step, got, k.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	os.WriteFile(p, []byte("model:\n  config: x.json\ndata:\n  seq_len: 8\n  shufle: true\n"), 0o644)
	if _, err := Load(p, nil); err == nil || !strings.Contains(err.Error(), "c.yaml:5: data.shufle: unknown key; did you mean data.shuffle?") {
		t.Fatalf("unknown key: %v", err)
	}
	os.WriteFile(p, []byte("model:\n  config: x.json\ndata:\n  datasets: [{path: d, weight: 1}]\ntrain:\n  steps: 10\n"), 0o644)
	if _, err := Load(p, []string{"optimizer.schedule=exp"}); err == nil || !strings.Contains(err.Error(), "schedule") {
		t.Fatalf("bad schedule: %v", err)
	}
	if _, err := Load(p, []string{"train.steps=-5"}); err == nil || !strings.Contains(err.Error(), "train.steps -5 must be positive") {
		t.Fatalf("negative steps: %v", err)
	}
	c, err := Load(p, []string{"optimizer.lr=0.01", "train.micro_batch=2"})
	if err != nil || c.Optimizer.LR != 0.01 || c.Train.MicroBatch != 2 || c.Data.SeqLen != 256 {
		t.Fatalf("%+v %v", c, err)
	}
}

func runTo(t *testing.T, c *Config, out string, interrupt <-chan struct{}) (*Result, error) {
	t.Helper()
	return Run(context.Background(), c, RunOptions{Out: out, Backend: cpu.New(), Interrupt: interrupt, Log: testLog{t}})
}

// runStopping runs c into out on b and interrupts it once its metrics
// reach step stopAt.
func runStopping(t *testing.T, c *Config, out string, b backend.Backend, stopAt int) (*Result, error) {
	t.Helper()
	stop, finished, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-finished:
				return
			default:
			}
			if ms, _ := ReadMetrics(out); len(ms) > 0 && ms[len(ms)-1].Step >= stopAt {
				close(stop)
				return
			}
			runtime.Gosched()
		}
	}()
	res, err := Run(context.Background(), c, RunOptions{Out: out, Backend: b, Interrupt: stop, Log: testLog{t}})
	close(finished)
	<-done
	return res, err
}

func TestTrainingLearns(t *testing.T) {
	c := tinyRun(t, 60)
	c.Checkpoint.Every = 0
	res, err := runTo(t, c, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := ReadMetrics(filepath.Dir(res.FinalDir))
	if err != nil {
		t.Fatal(err)
	}
	first := *ms[0].Loss
	// Untrained, the loss is about ln(4000) = 8.3; Go source is very
	// predictable, so 60 small steps must take it far lower, on held-out
	// text too.
	if first < 7.5 || res.TrainLoss > first-2.5 || math.IsNaN(res.ValLoss) || res.ValLoss > first-1.5 {
		t.Fatalf("loss %.3f -> %.3f (validation %.3f): not learning", first, res.TrainLoss, res.ValLoss)
	}
	// The exported model loads, with its tokenizer.
	m, err := model.Load(res.FinalDir, cpu.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokenizer.Open(res.FinalDir); err != nil || m.Config.VocabSize != 4000 {
		t.Fatalf("exported model: %v", err)
	}
}

// deterministic strips the timing fields of a metrics log.
func deterministic(t *testing.T, dir string) []Metric {
	ms, err := ReadMetrics(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ms {
		ms[i].TokPerS, ms[i].Elapsed = 0, 0
	}
	return ms
}

func sameMetrics(t *testing.T, a, b []Metric) {
	t.Helper()
	if len(a) != len(b) {
		for _, x := range [][]Metric{a, b} {
			for _, m := range x {
				t.Logf("step %d loss %v val %v", m.Step, m.Loss != nil, m.ValCE != nil)
			}
			t.Log("--")
		}
		t.Fatalf("%d metric lines vs %d", len(a), len(b))
	}
	for i := range a {
		x, y := a[i], b[i]
		eq := func(p, q *float64) bool { return (p == nil) == (q == nil) && (p == nil || *p == *q) }
		if x.Step != y.Step || x.Tokens != y.Tokens || !eq(x.Loss, y.Loss) || !eq(x.ValCE, y.ValCE) || !eq(x.LR, y.LR) || !eq(x.GradNorm, y.GradNorm) {
			t.Fatalf("metric line %d differs: %+v vs %+v", i, x, y)
		}
	}
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err1 := os.ReadFile(a)
	y, err2 := os.ReadFile(b)
	if err1 != nil || err2 != nil || !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ (%v, %v)", a, b, err1, err2)
	}
}

// TestResumeBitIdentical: interrupted runs, and a run that crashed in the
// middle of writing a checkpoint, resume to the exact same weights and
// per-step losses as an uninterrupted run.
func TestResumeBitIdentical(t *testing.T) {
	c := tinyRun(t, 12)
	// A copy of the shared corpus: the test edits it at the end.
	ds := t.TempDir()
	files, _ := filepath.Glob(filepath.Join(c.Data.Datasets[0].Path, "*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		os.WriteFile(filepath.Join(ds, filepath.Base(f)), b, 0o644)
	}
	c.Data.Datasets[0].Path = ds
	ref := t.TempDir()
	if _, err := runTo(t, c, ref, nil); err != nil {
		t.Fatal(err)
	}
	// Interrupted after steps 2 and 7 (a checkpoint is written then).
	out := t.TempDir()
	for _, stopAt := range []int{2, 7} {
		if _, err := runStopping(t, c, out, cpu.New(), stopAt); !errors.Is(err, ErrInterrupted) {
			t.Fatalf("interrupt at %d: %v", stopAt, err)
		}
	}
	res, err := runTo(t, c, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.ResumedFrom < 7 {
		t.Fatalf("resumed from %d", res.ResumedFrom)
	}
	// Rerunning a finished run reports its last losses.
	again, err := runTo(t, c, out, nil)
	if err != nil || again.ResumedFrom != 12 || again.TrainLoss != res.TrainLoss || again.ValLoss != res.ValLoss {
		t.Fatalf("rerun of a finished run: %+v (%v), want losses %v %v", again, err, res.TrainLoss, res.ValLoss)
	}
	sameFile(t, filepath.Join(ref, "checkpoint-0000012", "model.safetensors"), filepath.Join(out, "checkpoint-0000012", "model.safetensors"))
	sameFile(t, filepath.Join(ref, "checkpoint-0000012", "optimizer.safetensors"), filepath.Join(out, "checkpoint-0000012", "optimizer.safetensors"))
	sameMetrics(t, deterministic(t, ref), deterministic(t, out))

	// A crash while writing checkpoint 9: the half-written directory, a
	// checkpoint directory without COMPLETE, and metrics lines past the
	// last checkpoint are left behind.
	crash := t.TempDir()
	c6 := *c
	c6.Train.Steps = 12
	if _, err := runStopping(t, &c6, crash, cpu.New(), 6); !errors.Is(err, ErrInterrupted) {
		t.Fatal(err)
	}
	dirs, _ := Checkpoints(crash)
	st, err := readState(dirs[len(dirs)-1])
	if err != nil {
		t.Fatal(err)
	}
	next := checkpointName(st.Step + 1)
	os.MkdirAll(filepath.Join(crash, "."+next+".tmp-123"), 0o755)
	os.WriteFile(filepath.Join(crash, "."+next+".tmp-123", "model.safetensors"), []byte("torn"), 0o644)
	os.MkdirAll(filepath.Join(crash, checkpointName(st.Step+2)), 0o755) // no COMPLETE marker
	f, _ := os.OpenFile(filepath.Join(crash, MetricsFile), os.O_APPEND|os.O_WRONLY, 0o644)
	fmt.Fprintf(f, "{\"step\":%d,\"loss\":1.0,\"tokens\":1}\n{\"step\":%d,\"lo", st.Step+1, st.Step+2)
	f.Close()
	if _, err := runTo(t, c, crash, nil); err != nil {
		t.Fatal(err)
	}
	sameFile(t, filepath.Join(ref, "checkpoint-0000012", "model.safetensors"), filepath.Join(crash, "checkpoint-0000012", "model.safetensors"))
	sameMetrics(t, deterministic(t, ref), deterministic(t, crash))
	if left, _ := filepath.Glob(filepath.Join(crash, ".*tmp*")); len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	// Keep 2: only the newest complete checkpoints remain.
	dirs, _ = Checkpoints(ref)
	if len(dirs) != 2 || !strings.HasSuffix(dirs[1], "checkpoint-0000012") {
		t.Fatalf("checkpoints kept: %v", dirs)
	}
	// A changed optimizer is refused on resume, naming the key and both
	// values; a longer run of the same settings is allowed.
	c2 := *c
	c2.Optimizer.LR *= 2
	c2.Train.Steps = 20
	if _, err := runTo(t, &c2, out, nil); err == nil || !strings.Contains(err.Error(), "optimizer.lr: 0.003 (the run's) → 0.006 (now)") ||
		strings.Contains(err.Error(), "train.steps:") || !strings.Contains(err.Error(), "choose another output directory") {
		t.Fatalf("resume with another config: %v", err)
	}
	c3 := *c
	c3.Train.Steps = 14
	res, err = runTo(t, &c3, out, nil)
	if err != nil || res.ResumedFrom != 12 || res.Steps != 14 {
		t.Fatalf("extending the run: %+v %v", res, err)
	}
	// The dataset re-prepared with other content under the same path is
	// refused.
	os.WriteFile(filepath.Join(c.Data.Datasets[0].Path, "manifest.json"), editShardSum(t, c.Data.Datasets[0].Path), 0o644)
	c3.Train.Steps = 16
	if _, err := runTo(t, &c3, out, nil); err == nil || !strings.Contains(err.Error(), "data.datasets[0].path: the same path, but not the same content") {
		t.Fatalf("resume on other data: %v", err)
	}
}

// editShardSum returns a dataset's manifest with its first shard's checksum
// changed, as a dataset prepared again from other text would have.
func editShardSum(t *testing.T, dir string) []byte {
	t.Helper()
	var m map[string]any
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("manifest: %v", err)
	}
	shards := m["shards"].([]any)
	shards[0].(map[string]any)["sha256"] = strings.Repeat("0", 64)
	out, _ := json.Marshal(m)
	return out
}

// TestAccumulation: 2 micro-batches of 2 equal 1 micro-batch of 4.
func TestAccumulation(t *testing.T) {
	losses := map[int]float64{}
	var weights [][]float32
	for _, split := range [][2]int{{4, 1}, {2, 2}} {
		c := tinyRun(t, 3)
		c.Train.MicroBatch, c.Train.Accumulation = split[0], split[1]
		mc, _ := model.LoadConfig(c.Model.Config)
		m, _ := model.Random(mc, cpu.New(), 1)
		tr, err := NewTrainer(c, m, CrossEntropy{}, &RandomBatcher{Vocab: 4000, Len: c.Data.SeqLen, Seed: 9})
		if err != nil {
			t.Fatal(err)
		}
		var st StepStats
		for range 3 {
			if st, err = tr.TrainStep(); err != nil {
				t.Fatal(err)
			}
		}
		losses[split[1]] = st.Loss
		w, _ := m.Backend.ToFloat32(m.Weights[3])
		weights = append(weights, w)
	}
	if math.Abs(losses[1]-losses[2]) > 1e-5*losses[1] {
		t.Fatalf("loss %v vs %v", losses[1], losses[2])
	}
	for i := range weights[0] {
		if math.Abs(float64(weights[0][i]-weights[1][i])) > 1e-5 {
			t.Fatalf("weights differ at %d: %v vs %v", i, weights[0][i], weights[1][i])
		}
	}
}

// TestWeightDecayPolicies: with zero gradients, only decayed parameters
// shrink. By default (Megatron's rule) every weight of two or more
// dimensions decays, the embeddings and lm_head included, and no norm
// weight or bias does; no_embeddings spares the embeddings and lm_head;
// all decays everything.
func TestWeightDecayPolicies(t *testing.T) {
	for _, policy := range []string{"", DecayMatrices, DecayNoEmbeddings, DecayAll} {
		t.Run("policy="+policy, func(t *testing.T) {
			c := tinyRun(t, 1)
			c.Optimizer.WeightDecay = 0.5
			if policy != "" {
				c.Optimizer.Decay = policy
			}
			c.Optimizer.Warmup = 0
			mc, _ := model.LoadConfig(c.Model.Config)
			m, _ := model.Random(mc, cpu.New(), 1)
			for i := range m.Weights {
				m.Backend.Fill(m.Weights[i], 1)
			}
			tr, err := NewTrainer(c, m, zeroObjective{}, &RandomBatcher{Vocab: 4000, Len: c.Data.SeqLen})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tr.TrainStep(); err != nil {
				t.Fatal(err)
			}
			decayed := map[string]bool{}
			for i, p := range m.Params {
				w, _ := m.Backend.ToFloat32(m.Weights[i])
				switch w[0] {
				case float32(1 - c.LR(1, 1)*0.5):
					decayed[p.Name] = true
				case 1:
				default:
					t.Fatalf("%s = %v: neither decayed nor kept", p.Name, w[0])
				}
			}
			want := func(name string) bool {
				oneD := strings.Contains(name, "norm")
				emb := name == "model.embed_tokens.weight" || name == "lm_head.weight"
				switch policy {
				case DecayAll:
					return true
				case DecayNoEmbeddings:
					return !oneD && !emb
				}
				return !oneD
			}
			for _, p := range m.Params {
				if decayed[p.Name] != want(p.Name) {
					t.Errorf("%s decayed %v, want %v", p.Name, decayed[p.Name], want(p.Name))
				}
			}
			if !decayed["model.embed_tokens.weight"] && policy != DecayNoEmbeddings {
				t.Error("the embeddings must decay by default")
			}
		})
	}
}

// zeroObjective has zero loss and gradient.
type zeroObjective struct{}

func (zeroObjective) LossAndGrad(*model.Model, *model.Activations, model.Input, []int32, float32, *model.Grads) (float64, error) {
	return 0, nil
}
func (zeroObjective) Loss(*model.Model, *model.Activations, model.Input, []int32) (float64, error) {
	return 0, nil
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestCopyTokenizer: a model directory's tokenizer and generation files go
// along (a distilled student keeps generation_config.json); a single
// tokenizer file is named as transformers expects.
func TestCopyTokenizer(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	for _, f := range []string{"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "model.safetensors"} {
		os.WriteFile(filepath.Join(src, f), []byte(f), 0o644)
	}
	if err := CopyTokenizer(src, dst); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dst)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if want := "generation_config.json,special_tokens_map.json,tokenizer.model,tokenizer_config.json"; strings.Join(got, ",") != want {
		t.Fatalf("copied %v, want %s", got, want)
	}
	one := t.TempDir()
	if err := CopyTokenizer(tokPath, one); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(one, "tokenizer.model")); err != nil {
		t.Fatal(err)
	}
}

// TestMetricNames: a validation line is val_ce, and lines written as
// val_loss before the name changed still read.
func TestMetricNames(t *testing.T) {
	v := 2.5
	b, _ := json.Marshal(Metric{Step: 3, ValCE: &v})
	if !strings.Contains(string(b), `"val_ce":2.5`) {
		t.Fatalf("written %s", b)
	}
	var m Metric
	if err := json.Unmarshal([]byte(`{"step":3,"val_loss":1.5,"tokens":9,"extra":{"val_kl":0.1}}`), &m); err != nil || m.ValCE == nil || *m.ValCE != 1.5 ||
		m.Tokens != 9 || m.Extra["val_kl"] != 0.1 {
		t.Fatalf("read %+v %v", m, err)
	}
}

// TestValidationSequences: a model measured by eval on the run's
// validation sequences gets the run's val_ce (the same data, the same
// sequence length), whoever reports it.
func TestValidationSequences(t *testing.T) {
	c := tinyRun(t, 6)
	c.Checkpoint.ExportDType = "f32"
	res, err := runTo(t, c, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	seqs, err := ValidationSequences(c, 4000)
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) != c.Eval.Batches*c.Train.MicroBatch || len(seqs[0]) != c.Data.SeqLen+1 {
		t.Fatalf("%d sequences of %d tokens", len(seqs), len(seqs[0]))
	}
	m, err := model.Load(res.FinalDir, cpu.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := eval.PerplexityOn(context.Background(), m, seqs, c.Train.MicroBatch)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got.Loss-res.ValLoss) > 1e-5*res.ValLoss {
		t.Fatalf("eval on the validation sequences: %v, the run's val_ce %v", got.Loss, res.ValLoss)
	}
}

// TestValidateMessages: every problem is named by its key, indexes filled in.
func TestValidateMessages(t *testing.T) {
	c := Default()
	c.Model.Config = "x.json"
	c.Data.Datasets = []Dataset{{Path: "a", Weight: 1}, {Weight: -1}}
	c.Train.Steps = 10
	err := c.Validate()
	for _, want := range []string{"data.datasets[1].path: no path", "data.datasets[1].weight -1 () must be positive"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %q", err, want)
		}
	}
	if err != nil && strings.ContainsAny(err.Error(), "{}") {
		t.Errorf("braces left in %q", err)
	}
}

// countingBackend counts SquaredNorm calls and the tensors they cover.
type countingBackend struct {
	backend.Backend
	calls, tensors int
}

func (c *countingBackend) SquaredNorm(ts ...backend.Tensor) (float64, error) {
	c.calls++
	c.tensors += len(ts)
	return c.Backend.SquaredNorm(ts...)
}

// TestGradNormOneReduction: the global gradient norm of a step is one
// SquaredNorm over every gradient (one device synchronization), not one
// call per tensor.
func TestGradNormOneReduction(t *testing.T) {
	c := tinyRun(t, 2)
	mc, _ := model.LoadConfig(c.Model.Config)
	cb := &countingBackend{Backend: cpu.New()}
	m, err := model.Random(mc, cb, 1)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrainer(c, m, CrossEntropy{}, &RandomBatcher{Vocab: 4000, Len: c.Data.SeqLen, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Free()
	st, err := tr.TrainStep()
	if err != nil {
		t.Fatal(err)
	}
	if cb.calls != 1 || cb.tensors != len(m.Params) {
		t.Fatalf("one step made %d SquaredNorm calls over %d tensors, want 1 over %d", cb.calls, cb.tensors, len(m.Params))
	}
	// The norm is that of the gradients the step used.
	var want float64
	for _, g := range tr.grads.T {
		v, _ := m.Backend.ToFloat32(g)
		for _, x := range v {
			want += float64(x) * float64(x)
		}
	}
	if math.Abs(st.GradNorm-math.Sqrt(want)) > 1e-9*st.GradNorm {
		t.Fatalf("grad norm %v, want %v", st.GradNorm, math.Sqrt(want))
	}
}

// TestLegacyFingerprint: a run saved before optimizer.decay, master_weights
// and grad_dtype existed resumes when the config asks for what it did. The
// expected fingerprints were computed by that earlier code on the same
// configuration.
func TestLegacyFingerprint(t *testing.T) {
	cases := []struct {
		decay string
		want  string
	}{
		{DecayNoEmbeddings, "7665186cbd75cdd23b8dd5598b0f82d6b7ba1aa0d865b828c0ac9353f503cd0d"}, // decay_norms_and_embeddings: false
		{DecayAll, "877762f074500770976145d750aa689c4eadeda8ddd978a1babbaa75fb492aad"},          // true
		{DecayMatrices, ""}, // no earlier run decayed this way
	}
	for _, k := range cases {
		t.Run(k.decay, func(t *testing.T) {
			c := Default()
			c.Model.Config = "models/x/config.json"
			c.Model.InitSeed = 7
			c.Data.Datasets = []Dataset{{Path: "data/go", Weight: 1}}
			c.Data.SeqLen = 64
			c.Train.MicroBatch, c.Train.Accumulation, c.Train.Steps = 2, 4, 12
			c.Optimizer.LR = 1e-3
			c.Optimizer.Decay = k.decay
			if got := c.legacyFingerprint(); got != k.want {
				t.Errorf("legacy fingerprint %q, want %q", got, k.want)
			}
			if c.fingerprint() == k.want {
				t.Error("the current fingerprint equals the legacy one")
			}
			c.Optimizer.GradDType = "bf16"
			if got := c.legacyFingerprint(); got != "" {
				t.Errorf("bf16 gradients: legacy fingerprint %q, want none", got)
			}
		})
	}
}
