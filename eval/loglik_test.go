package eval

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/generate"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

func tinyTeacher(t testing.TB) (*model.Model, tokenizer.Tokenizer) {
	t.Helper()
	m, err := model.Load("../models/tiny-teacher", cpu.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Open("../models/tiny-teacher")
	if err != nil {
		t.Fatal(err)
	}
	return m, tok
}

// referenceLogLik computes a request's log-likelihood the long way, step
// by step as HFLM does it: trailing whitespace of the context moves to the
// continuation; the continuation's tokens are those of encode(context +
// continuation) past len(encode(context)); the input is the last maxLen+1
// tokens of both, minus the last; one forward pass of that sequence alone
// gives the logits of the continuation's positions.
func referenceLogLik(t *testing.T, m *model.Model, tok tokenizer.Tokenizer, ctx, cont string, bos bool, maxLen int) float64 {
	t.Helper()
	for strings.HasSuffix(ctx, " ") || strings.HasSuffix(ctx, "\n") {
		cont = ctx[len(ctx)-1:] + cont
		ctx = ctx[:len(ctx)-1]
	}
	var pre []int32
	if bos {
		pre = []int32{tok.BOS()}
	}
	ctxEnc := append(slices.Clone(pre), tok.Encode(ctx)...)
	whole := append(slices.Clone(pre), tok.Encode(ctx+cont)...)
	contEnc := whole[len(ctxEnc):]
	full := append(slices.Clone(ctxEnc), contEnc...)
	if maxLen > 0 && len(full) > maxLen+1 {
		full = full[len(full)-maxLen-1:]
	}
	in := full[:len(full)-1]
	a, err := m.NewActivations(len(in), false)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Free(m.Backend)
	var rows []int32
	for i := range contEnc {
		rows = append(rows, int32(len(in)-len(contEnc)+i))
	}
	lg, err := m.Forward(a, model.Input{B: 1, T: len(in), IDs: in, LogitRows: rows}, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lv, err := m.Backend.ToFloat32(lg)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.VocabSize
	var sum float64
	for i := range contEnc {
		sum += float64(generate.TokenLogprob(lv[i*V:(i+1)*V], contEnc[i], 0).Logprob)
	}
	return sum
}

// benchmarkDocs builds the documents of the four multiple-choice
// benchmarks' test data.
func benchmarkDocs(t *testing.T, opt BuildOptions) []Doc {
	t.Helper()
	var docs []Doc
	for _, task := range []string{"hellaswag", "winogrande", "arc_challenge", "mmlu"} {
		d, err := OpenDataset(filepath.Join(testdata, "jsonl", task))
		if err != nil {
			t.Fatal(err)
		}
		ds, err := tasks[task].Build(context.Background(), d, opt)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, ds...)
	}
	return docs
}

func testDocs(t *testing.T) []Doc {
	t.Helper()
	docs := benchmarkDocs(t, BuildOptions{Shots: 2})
	// Code, with a trailing space and a trailing newline in the context.
	docs = append(docs, ItemDocs("code", []Item{
		{Context: "func main() {\n\tfmt.", Choices: []string{"Println(\"hello\")", "x", "Errorf(\"%v\", err) // a longer one"}},
		{Context: "for i := 0; i < n; ", Choices: []string{"i++ {", "return nil"}},
		{Context: "if err != nil {\n", Choices: []string{"\treturn err", "}"}},
	})...)
	return docs
}

// TestScoreMatchesReference: every request's log-likelihood, computed with
// shared prefixes, KV-cache copies and cross-document batches (large and
// tiny batches, plain per-document passes, BOS, left truncation), equals
// the same request computed alone from a full forward pass.
func TestScoreMatchesReference(t *testing.T) {
	m, tok := tinyTeacher(t)
	docs := testDocs(t)
	cases := []struct {
		name string
		opt  ScoreOptions
	}{
		{"batched", ScoreOptions{}},
		{"tiny batches", ScoreOptions{BatchTokens: 64}},
		{"plain", ScoreOptions{Plain: true}},
		{"bos, truncated", ScoreOptions{BOS: true, MaxLen: 48, BatchTokens: 300}},
	}
	type key struct {
		ctx, cont string
		bos       bool
		maxLen    int
	}
	refs := map[key]float64{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var progress []int
			c.opt.Progress = func(done, total int) { progress = append(progress, done, total) }
			got, err := Score(context.Background(), m, tok, docs, c.opt)
			if err != nil {
				t.Fatal(err)
			}
			total := 0
			for d, doc := range docs {
				for r, rq := range doc.Requests {
					total++
					k := key{rq.Context, rq.Continuation, c.opt.BOS, c.opt.MaxLen}
					want, ok := refs[k]
					if !ok {
						want = referenceLogLik(t, m, tok, rq.Context, rq.Continuation, c.opt.BOS, c.opt.MaxLen)
						refs[k] = want
					}
					if math.Abs(got[d][r]-want) > 2e-4*math.Max(1, math.Abs(want)) {
						t.Errorf("%s doc %d choice %d: %v, want %v", rq.Task, rq.Doc, r, got[d][r], want)
					}
				}
			}
			if len(progress) < 2 || progress[len(progress)-2] != total || progress[len(progress)-1] != total {
				t.Errorf("progress %v, want to end at %d of %d", progress, total, total)
			}
		})
	}
}

// TestEncodePair: the continuation's tokens are those of the whole past the
// context's, with the context's trailing whitespace moved over.
func TestEncodePair(t *testing.T) {
	_, tok := tinyTeacher(t)
	cases := []struct {
		ctx, cont string
		bos       bool
		wantCtx   []int32
		wantCont  []int32
	}{
		{"x := 1", " + 2", false, tok.Encode("x := 1"), tok.Encode("x := 1 + 2")[len(tok.Encode("x := 1")):]},
		{"x := 1 ", "+ 2", false, tok.Encode("x := 1"), tok.Encode("x := 1 + 2")[len(tok.Encode("x := 1")):]},
		{"x := 1\n\n", "y", true, append([]int32{tok.BOS()}, tok.Encode("x := 1")...), tok.Encode("x := 1\n\ny")[len(tok.Encode("x := 1")):]},
		{"", "func", false, []int32{tok.BOS()}, tok.Encode("func")},
	}
	for _, c := range cases {
		ctx, cont, err := encodePair(tok, c.ctx, c.cont, c.bos, map[string][]int32{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ctx, c.wantCtx) || !slices.Equal(cont, c.wantCont) {
			t.Errorf("(%q, %q): %v %v, want %v %v", c.ctx, c.cont, ctx, cont, c.wantCtx, c.wantCont)
		}
	}
}

// TestScoreAccuracy: the tiny teacher, trained on Go source, tells Go from
// nonsense.
func TestScoreAccuracy(t *testing.T) {
	m, tok := tinyTeacher(t)
	docs := ItemDocs("go", []Item{
		{Context: "package main\n\nimport (\n\t\"fmt\"\n)\n\nfunc main() {\n\tfmt.", Choices: []string{"qqzx vvk", "Println(\"hello, world\")"}, Label: 1},
		{Context: "if err != nil {\n\treturn", Choices: []string{"err\n}", "})]] ((("}, Label: 0},
		{Context: "for i := 0; i < len(s);", Choices: []string{"zzz zzz zzz", "i++ {"}, Label: 1},
		{Context: "// Copyright 2009 The Go Authors. All rights reserved.\n// Use of this source code is governed by a BSD-style", Choices: []string{"license that can be found in the LICENSE file.", "banana banana banana"}, Label: 0},
	})
	for i := range docs {
		docs[i].Gold = []int{1, 0, 1, 0}[i]
	}
	ll, err := Score(context.Background(), m, tok, docs, ScoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := accuracy(nil, docs, ll, 0)
	if r.Acc.Value != 1 || r.AccNorm == nil || r.AccNorm.Value != 1 || r.Docs != 4 {
		t.Fatalf("acc %v acc_norm %v on %d docs; log-likelihoods %v", r.Acc, r.AccNorm, r.Docs, ll)
	}
}

func TestScoreErrors(t *testing.T) {
	m, tok := tinyTeacher(t)
	doc := func(ctx, cont string) []Doc {
		return []Doc{{Requests: []Request{{Task: "t", Doc: 3, Choice: 1, Context: ctx, Continuation: cont}}, ChoiceChars: []int{1}}}
	}
	for _, c := range []struct {
		docs []Doc
		opt  ScoreOptions
		want string
	}{
		{doc("x", ""), ScoreOptions{}, "t doc 3 choice 1: the continuation \"\" encodes to no tokens"},
		{doc("x", " "+strings.Repeat("y", 200)), ScoreOptions{MaxLen: 8}, "exceed the model's context of 8"},
	} {
		if _, err := Score(context.Background(), m, tok, c.docs, c.opt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v, want %q", err, c.want)
		}
	}
}
