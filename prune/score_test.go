package prune

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/distill"
	"github.com/minitron/minitron/importance"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
	"github.com/minitron/minitron/train"
)

// scoreSetup prepares a small dataset and a random teacher of 3 layers
// with its scores.
func scoreSetup(t *testing.T) (dir, ds, tdir string, teacher *model.Model, scores *importance.Scores) {
	t.Helper()
	dir = t.TempDir()
	var text strings.Builder
	for i := range 300 {
		text.WriteString("func f" + strings.Repeat("x", i%11) + "(a, b int) int { return a*b + 42 }\n")
	}
	os.WriteFile(filepath.Join(dir, "in.txt"), []byte(text.String()), 0o644)
	tok, err := tokenizer.LoadSentencePiece("../testdata/tokenizer/spm-nemotron-style.model")
	if err != nil {
		t.Fatal(err)
	}
	ds = filepath.Join(dir, "ds")
	if _, err := data.Prepare(context.Background(), data.PrepareOptions{Inputs: []string{filepath.Join(dir, "in.txt")}, Out: ds, Tokenizer: tok, SplitLines: true, AddEOS: true}); err != nil {
		t.Fatal(err)
	}
	cfg, _ := model.ParseConfig([]byte(`{"architectures":["NemotronForCausalLM"],"vocab_size":4000,"hidden_size":32,"num_hidden_layers":3,
		"num_attention_heads":4,"num_key_value_heads":2,"head_dim":8,"intermediate_size":48,"initializer_range":0.2}`))
	teacher, _ = model.Random(cfg, cpu.New(), 1)
	tdir = filepath.Join(dir, "teacher")
	os.MkdirAll(tdir, 0o755)
	if err := teacher.Save(tdir, backend.F32, 1<<30); err != nil {
		t.Fatal(err)
	}
	ids := make([]int32, 4*16)
	for i := range ids {
		ids[i] = int32(i * 37 % 4000)
	}
	scores, err = importance.Estimate(context.Background(), teacher, ids, 4, 16, importance.Options{Depth: true})
	if err != nil {
		t.Fatal(err)
	}
	return dir, ds, tdir, teacher, scores
}

// TestScoreCandidates prunes three candidates of a small teacher, distills
// each for a few steps and ranks them; a rerun scores nothing again.
func TestScoreCandidates(t *testing.T) {
	dir, ds, tdir, _, scores := scoreSetup(t)
	cs := []Candidate{
		{Layers: 2, Hidden: 16, Heads: 2, FFN: 16},
		{Layers: 2, Hidden: 24, Heads: 4, FFN: 32},
		{Layers: 1, Hidden: 16, Heads: 2, FFN: 16},
	}
	dc := distill.Default()
	dc.Data = train.DataConfig{Datasets: []train.Dataset{{Path: ds, Weight: 1}}, SeqLen: 8, ValFraction: 0.2, Seed: 1, Shuffle: true}
	dc.Train.MicroBatch, dc.Train.Steps = 4, 3
	dc.Optimizer.Warmup = 1
	dc.Eval.Batches = 2
	dc.Teacher = distill.Teacher{Model: tdir}
	var log bytes.Buffer
	opt := ScoreOptions{Source: tdir, Scores: scores, Out: filepath.Join(dir, "search"), Retrain: distill.Retrainer(dc, train.RunOptions{Backend: cpu.New()}), Log: &log}
	got, err := ScoreCandidates(context.Background(), cs, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d results", len(got))
	}
	for i := range got {
		if got[i].ValLoss == nil || *got[i].ValLoss != got[i].Score || !(got[i].Score > 0) || (i > 0 && got[i].Score < got[i-1].Score) {
			t.Fatalf("results not ranked by validation loss: %+v", got)
		}
		pm, err := model.LoadConfig(filepath.Join(got[i].Dir, "model", "config.json"))
		if err != nil || pm.HiddenSize != got[i].Hidden || pm.NumLayers != got[i].Layers || pm.NumHeads != got[i].Heads || pm.IntermediateSize != got[i].FFN {
			t.Fatalf("candidate %v pruned to %+v (%v)", got[i].Candidate, pm, err)
		}
	}
	before, _ := os.ReadFile(filepath.Join(opt.Out, ResultsFile))
	log.Reset()
	again, err := ScoreCandidates(context.Background(), cs, opt)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(opt.Out, ResultsFile))
	if strings.Count(log.String(), "scored before") != 3 || !bytes.Equal(before, after) || again[0].Name() != got[0].Name() || again[0].Score != got[0].Score {
		t.Fatalf("rerun scored again:\n%s", log.String())
	}
	// Results written before val_ce had its name read the same.
	if !bytes.Contains(before, []byte(`"val_ce"`)) {
		t.Fatalf("results without val_ce:\n%s", before)
	}
	os.WriteFile(filepath.Join(opt.Out, ResultsFile), bytes.ReplaceAll(before, []byte(`"val_ce"`), []byte(`"val_loss"`)), 0o644)
	log.Reset()
	same := func(a, b Scored) bool {
		return a.Name() == b.Name() && a.Score == b.Score && a.Metric == b.Metric && a.ValLoss != nil && b.ValLoss != nil && *a.ValLoss == *b.ValLoss
	}
	if old, err := ScoreCandidates(context.Background(), cs, opt); err != nil || strings.Count(log.String(), "scored before") != 3 || !same(old[0], got[0]) || !same(old[2], got[2]) {
		t.Fatalf("results with val_loss: %+v, %v\n%s", old, err, log.String())
	}
	// A candidate the teacher cannot be pruned to fails before any training.
	bad := append(cs, Candidate{Layers: 2, Hidden: 64, Heads: 4, FFN: 16})
	opt.Out = filepath.Join(dir, "bad")
	if _, err := ScoreCandidates(context.Background(), bad, opt); err == nil || !strings.Contains(err.Error(), "hidden") {
		t.Fatalf("impossible candidate: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad", cs[0].Name())); err == nil {
		t.Fatal("work was done before the impossible candidate was refused")
	}
}

// TestScoreBlocks ranks the contiguous blocks of one layer by the held-out
// loss of the model without them (no distillation): each score equals the
// source's loss on the validation split with that layer skipped.
func TestScoreBlocks(t *testing.T) {
	dir, ds, tdir, teacher, scores := scoreSetup(t)
	cs, err := BlockCandidates(teacher.Config, 1)
	if err != nil || len(cs) != 3 {
		t.Fatalf("%d candidates, %v", len(cs), err)
	}
	const T = 8
	got, err := ScoreCandidates(context.Background(), cs, ScoreOptions{Source: tdir, Scores: scores, Out: filepath.Join(dir, "blocks"),
		Metric: ValLoss(ds, T, 0.2, 0), Backend: cpu.New()})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := data.Open(ds)
	defer d.Close()
	_, val, _ := d.Split(T, 0.2)
	a, _ := teacher.NewActivations(T, false)
	for i, g := range got {
		if i > 0 && g.Score < got[i-1].Score || g.ValLoss != nil || g.Metric != "val_ce" {
			t.Fatalf("results %+v", got)
		}
		skip := make([]bool, 3)
		skip[g.Drop[0]] = true
		var sum float64
		for k := range val.Count {
			seq, _ := val.Read(nil, k)
			l, err := teacher.Loss(a, model.Input{B: 1, T: T, IDs: seq[:T]}, seq[1:], model.Options{Skip: skip})
			if err != nil {
				t.Fatal(err)
			}
			sum += l
		}
		if want := sum / float64(val.Count); math.Abs(g.Score-want) > 1e-4*want {
			t.Errorf("without layer %d: score %v, want %v", g.Drop[0], g.Score, want)
		}
		rep, err := ReadReport(filepath.Join(g.Dir, "model"))
		if err != nil || len(rep.Kept.Layers) != 2 || slices.Contains(rep.Kept.Layers, g.Drop[0]) {
			t.Fatalf("candidate %v kept %v (%v)", g.Candidate, rep.Kept.Layers, err)
		}
	}
	// A multiple-choice metric ranks highest first.
	items := filepath.Join(dir, "toy.jsonl")
	os.WriteFile(items, []byte(`{"context": "func f", "choices": ["() int", "zzz qqq"], "label": 0}
{"context": "return a", "choices": ["*b + 42", "((("], "label": 0}
`), 0o644)
	got, err = ScoreCandidates(context.Background(), cs, ScoreOptions{Source: tdir, Scores: scores, Out: filepath.Join(dir, "mc"),
		Metric: Task("", items, "../testdata/tokenizer/spm-nemotron-style.model", -1, 0), Backend: cpu.New()})
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range got {
		if g.Score < 0 || g.Score > 1 || i > 0 && g.Score > got[i-1].Score || g.Metric != "acc toy" {
			t.Fatalf("results %+v", got)
		}
	}
	if _, err := BlockCandidates(teacher.Config, 3); err == nil {
		t.Fatal("a block of every layer accepted")
	}
}
