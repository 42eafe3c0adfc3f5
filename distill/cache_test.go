package distill

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/backendtest"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
	"github.com/minitron/minitron/train"
)

// cacheSetup makes a small dataset and a random teacher and student of the
// tokenizer's vocabulary.
func cacheSetup(t *testing.T) (ds, teacherDir string, teacher, student *model.Model) {
	t.Helper()
	dir := t.TempDir()
	var text strings.Builder
	for i := range 60 {
		text.WriteString("func f" + strings.Repeat("x", i%7) + "() int { return 42 }\n")
	}
	os.WriteFile(filepath.Join(dir, "in.txt"), []byte(text.String()), 0o644)
	tok, _ := tokenizer.LoadSentencePiece("../testdata/tokenizer/spm-nemotron-style.model")
	ds = filepath.Join(dir, "ds")
	if _, err := data.Prepare(context.Background(), data.PrepareOptions{Inputs: []string{filepath.Join(dir, "in.txt")}, Out: ds, Tokenizer: tok, SplitLines: true, AddEOS: true}); err != nil {
		t.Fatal(err)
	}
	mk := func(seed uint64, hidden int) *model.Model {
		cfg, _ := model.ParseConfig([]byte(`{"architectures":["NemotronForCausalLM"],"vocab_size":4000,"hidden_size":` + map[int]string{32: "32", 16: "16"}[hidden] +
			`,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"intermediate_size":32,"initializer_range":0.2}`))
		m, _ := model.Random(cfg, cpu.New(), seed)
		return m
	}
	teacher, student = mk(1, 32), mk(2, 16)
	teacherDir = filepath.Join(dir, "teacher")
	os.MkdirAll(teacherDir, 0o755)
	if err := teacher.Save(teacherDir, backend.F32, 1<<30); err != nil {
		t.Fatal(err)
	}
	return ds, teacherDir, teacher, student
}

func TestCacheMatchesTeacher(t *testing.T) {
	ds, teacherDir, teacher, _ := cacheSetup(t)
	out := filepath.Join(t.TempDir(), "cache")
	const T, K = 8, 16
	var started [3]int64
	start := func(seqs, tokens, bytes int64) { started = [3]int64{seqs, tokens, bytes} }
	counted := backendtest.NewCounting(teacher.Backend)
	teacher.Backend = counted
	man, err := CacheTeacher(context.Background(), teacher, CacheOptions{TeacherDir: teacherDir, DatasetDir: ds, SeqLen: T, K: K, Temperature: 2, Out: out, BatchSeqs: 4, ShardSeqs: 12, MicroBatch: 3, Start: start})
	if err != nil {
		t.Fatal(err)
	}
	// The size announced: K int32 ids and K float32 log-probabilities per token.
	if want := [3]int64{man.Sequences, man.Sequences * T, man.Sequences * T * K * (4 + 4)}; started != want {
		t.Fatalf("announced %v, want %v", started, want)
	}
	started = [3]int64{}
	// The last micro-batch is smaller and gets its own workspace; all are freed.
	if man.Sequences%3 == 0 {
		t.Fatalf("%d sequences: the test wants a partial last micro-batch", man.Sequences)
	}
	if n := counted.Live(); n != 0 {
		t.Fatalf("%d tensors not freed", n)
	}
	if len(man.Shards) < 2 {
		t.Fatalf("%d shards: the test wants several", len(man.Shards))
	}
	c, err := OpenCache(out)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, _ := data.Open(ds)
	for _, g := range []int64{0, 5, 13, man.Sequences - 1} {
		ids, _ := d.Read(nil, g*T, T)
		a, _ := teacher.NewActivations(T, false)
		lg, _ := teacher.Forward(a, model.Input{B: 1, T: T, IDs: ids}, model.Options{})
		full, _ := teacher.Backend.ToFloat32(lg)
		cid, clp, err := c.Sequence(g)
		if err != nil {
			t.Fatal(err)
		}
		V := 4000
		for pos := range T {
			row := full[pos*V : (pos+1)*V]
			// Independent top-k: sort every token by logit, log-softmax at T=2.
			order := make([]int, V)
			for i := range order {
				order[i] = i
			}
			sort.SliceStable(order, func(a, b int) bool { return row[order[a]] > row[order[b]] })
			var s float64
			for _, x := range row {
				s += math.Exp(float64(x) / 2)
			}
			for j := range K {
				want := float64(row[order[j]])/2 - math.Log(s)
				if int(cid[pos*K+j]) != order[j] || math.Abs(float64(clp[pos*K+j])-want) > 1e-4 {
					t.Fatalf("sequence %d position %d rank %d: (%d, %v), want (%d, %v)", g, pos, j, cid[pos*K+j], clp[pos*K+j], order[j], want)
				}
			}
		}
	}
	// A second run with the same inputs keeps the cache: its files are the
	// same files (a rebuild writes new ones), and the teacher never runs.
	files := func() map[string]os.FileInfo {
		m := map[string]os.FileInfo{}
		names, _ := filepath.Glob(filepath.Join(out, "*"))
		for _, n := range names {
			st, err := os.Stat(n)
			if err != nil {
				t.Fatal(err)
			}
			m[filepath.Base(n)] = st
		}
		return m
	}
	before := files()
	progress := 0
	opt := CacheOptions{TeacherDir: teacherDir, DatasetDir: ds, SeqLen: T, K: K, Temperature: 2, Out: out, BatchSeqs: 4, ShardSeqs: 12,
		Progress: func(done, total int64) { progress++ }, Start: start}
	again, err := CacheTeacher(context.Background(), teacher, opt)
	if err != nil || again.Sequences != man.Sequences {
		t.Fatal(err)
	}
	after := files()
	if progress != 0 || started != ([3]int64{}) || len(after) != len(before) {
		t.Fatalf("the cache was rebuilt: %d progress calls, files %d -> %d", progress, len(before), len(after))
	}
	for n, st := range before {
		if !os.SameFile(st, after[n]) || !st.ModTime().Equal(after[n].ModTime()) {
			t.Fatalf("the cache was rebuilt: %s was rewritten", n)
		}
	}
	// Another k is another cache.
	opt.K = K / 2
	rebuilt, err := CacheTeacher(context.Background(), teacher, opt)
	if err != nil || rebuilt.K != K/2 || progress == 0 {
		t.Fatalf("k %d -> %d: %v (%d progress calls)", K, opt.K, err, progress)
	}
	if m, err := ReadCacheManifest(out); err != nil || m.K != K/2 {
		t.Fatalf("manifest after the rebuild: %+v %v", m, err)
	}
}

// TestCachedDistillation: the cached objective's loss equals a float64 KL
// against the renormalized top-k of the teacher's own logits, and a run
// with the cache trains.
func TestCachedDistillation(t *testing.T) {
	ds, teacherDir, teacher, student := cacheSetup(t)
	out := filepath.Join(t.TempDir(), "cache")
	const T, K = 8, 32
	if _, err := CacheTeacher(context.Background(), teacher, CacheOptions{TeacherDir: teacherDir, DatasetDir: ds, SeqLen: T, K: K, Temperature: 1, Out: out}); err != nil {
		t.Fatal(err)
	}
	c, _ := OpenCache(out)
	dm, _ := data.ReadManifest(ds)
	o, err := NewCachedObjective(c, student, KD{Temperature: 1}, T, []*data.Manifest{dm})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := data.Open(ds)
	seqs := []int64{3, 7}
	var ids []int32
	for _, g := range seqs {
		s, _ := d.Read(nil, g*T, T)
		ids = append(ids, s...)
	}
	o.SetRefs([]data.SeqRef{{Sequence: 3}, {Sequence: 7}})
	in := model.Input{B: 2, T: T, IDs: ids}
	a, _ := student.NewActivations(2*T, true)
	g, _ := student.NewGrads()
	got, err := o.LossAndGrad(student, a, in, model.NextTokenTargets(ids, 2, T), 1, g)
	if err != nil {
		t.Fatal(err)
	}
	logitsOf := func(m *model.Model) []float32 {
		a, _ := m.NewActivations(2*T, false)
		lg, _ := m.Forward(a, in, model.Options{})
		v, _ := m.Backend.ToFloat32(lg)
		return v
	}
	tl, sl := logitsOf(teacher), logitsOf(student)
	V := 4000
	var want float64
	for r := range 2 * T {
		lp := logSoftmax(tl[r*V:(r+1)*V], 1)
		lq := logSoftmax(sl[r*V:(r+1)*V], 1)
		order := make([]int, V)
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return lp[order[a]] > lp[order[b]] })
		var mass float64
		for _, j := range order[:K] {
			mass += math.Exp(lp[j])
		}
		for _, j := range order[:K] {
			p := math.Exp(lp[j]) / mass
			want += p * (math.Log(p) - lq[j])
		}
	}
	want /= float64(2 * T)
	if math.Abs(got-want) > 1e-4*want {
		t.Fatalf("cached KL %v, want %v", got, want)
	}
	// Checks before any work.
	if _, err := NewCachedObjective(c, student, KD{Temperature: 1}, 16, []*data.Manifest{dm}); err == nil || !strings.Contains(err.Error(), "seq_len") {
		t.Fatalf("sequence length mismatch: %v", err)
	}
	if _, err := NewCachedObjective(c, student, KD{Temperature: 2}, T, []*data.Manifest{dm}); err == nil || !strings.Contains(err.Error(), "temperature") {
		t.Fatalf("temperature mismatch: %v", err)
	}
	// A short distillation run from the cache.
	sdir := filepath.Join(t.TempDir(), "student")
	os.MkdirAll(sdir, 0o755)
	student.Save(sdir, backend.F32, 1<<30)
	cfg := Default()
	cfg.Model.Checkpoint = sdir
	cfg.Teacher.Cache = out
	cfg.Data = train.DataConfig{Datasets: []train.Dataset{{Path: ds, Weight: 1}}, SeqLen: T, ValFraction: 0, Seed: 1, Shuffle: true}
	cfg.Train.MicroBatch, cfg.Train.Steps = 4, 6
	cfg.Optimizer.Warmup = 1
	cfg.Eval.Batches = 0
	res, _, err := Run(context.Background(), &cfg, train.RunOptions{Out: filepath.Join(t.TempDir(), "run"), Backend: cpu.New()})
	if err != nil {
		t.Fatal(err)
	}
	ms, _ := train.ReadMetrics(filepath.Dir(res.FinalDir))
	if *ms[len(ms)-1].Loss >= *ms[0].Loss || ms[0].Extra["kl"] == 0 {
		t.Fatalf("cached distillation did not lower the loss: %v -> %v", *ms[0].Loss, *ms[len(ms)-1].Loss)
	}
}
