package eval

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

func tinyTeacher(t *testing.T) (*model.Model, tokenizer.Tokenizer) {
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

// TestMultipleChoiceLogLik: each choice's log-likelihood, computed in one
// right-padded batch with logits only at the choice positions, equals the
// sum over its tokens computed from a full forward pass of that sequence
// alone.
func TestMultipleChoiceLogLik(t *testing.T) {
	m, tok := tinyTeacher(t)
	items := []Item{
		{Context: "func main() {\n\tfmt.", Choices: []string{"Println(\"hello\")", "x", "Errorf(\"%v\", err) // a longer one"}, Label: 0},
		{Context: "for i := 0; i < n;", Choices: []string{"i++ {", "return nil"}, Label: 0},
	}
	res, err := MultipleChoice(context.Background(), m, tok, items, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range items {
		for c, choice := range it.Choices {
			prefix := append([]int32{tok.BOS()}, tok.Encode(it.Context)...)
			cont := tok.Encode(" " + choice)
			seq := append(append([]int32(nil), prefix...), cont...)
			a, _ := m.NewActivations(len(seq), false)
			lg, err := m.Forward(a, model.Input{B: 1, T: len(seq), IDs: seq}, model.Options{})
			if err != nil {
				t.Fatal(err)
			}
			lv, _ := m.Backend.ToFloat32(lg)
			V := m.Config.VocabSize
			var want float64
			for pos := len(prefix); pos < len(seq); pos++ {
				want += logSoftmaxAt(lv[(pos-1)*V:pos*V], seq[pos])
			}
			if got := res.LogLik[i][c]; math.Abs(got-want) > 1e-4*math.Max(1, math.Abs(want)) {
				t.Errorf("item %d choice %d: log-likelihood %v, want %v", i, c, got, want)
			}
		}
	}
}

// TestMultipleChoiceAccuracy: the tiny teacher, trained on Go source, tells
// Go from nonsense.
func TestMultipleChoiceAccuracy(t *testing.T) {
	m, tok := tinyTeacher(t)
	items := []Item{
		{Context: "package main\n\nimport (\n\t\"fmt\"\n)\n\nfunc main() {\n\tfmt.", Choices: []string{"qqzx vvk", "Println(\"hello, world\")"}, Label: 1},
		{Context: "if err != nil {\n\treturn", Choices: []string{"err\n}", "})]] ((("}, Label: 0},
		{Context: "for i := 0; i < len(s);", Choices: []string{"zzz zzz zzz", "i++ {"}, Label: 1},
		{Context: "// Copyright 2009 The Go Authors. All rights reserved.\n// Use of this source code is governed by a BSD-style", Choices: []string{"license that can be found in the LICENSE file.", "banana banana banana"}, Label: 0},
	}
	res, err := MultipleChoice(context.Background(), m, tok, items, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Acc != 1 || res.AccNorm != 1 || res.Items != 4 {
		t.Fatalf("acc %v acc_norm %v on %d items; log-likelihoods %v", res.Acc, res.AccNorm, res.Items, res.LogLik)
	}
}

func TestReadItems(t *testing.T) {
	in := `{"context": "a", "choices": ["b", "c"], "label": 1}
{"ctx": "d", "endings": ["e", "f", "g"], "label": "2"}

{"question": "2+2?", "choices": ["3", "4"], "answer": 1}
`
	items, err := ReadItems(strings.NewReader(in), "t.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 3 || items[0].Label != 1 || items[1].Label != 2 || len(items[1].Choices) != 3 ||
		items[2].Context != "Question: 2+2?\nAnswer:" || items[2].Label != 1 {
		t.Fatalf("%+v", items)
	}
	for bad, want := range map[string]string{
		`{"context": "a", "choices": ["b"], "label": 0}`:        "at least 2",
		`{"context": "a", "choices": ["b", "c"], "label": 5}`:   "outside",
		`{"choices": ["b", "c"], "label": 0}`:                   "no context",
		`{"context": "a", "choices": ["b", "c"], "label": "x"}`: "choice index",
		`not json`: "t.jsonl:2",
	} {
		_, err := ReadItems(strings.NewReader("{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"label\": 0}\n"+bad), "t.jsonl")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", bad, err, want)
		}
	}
}
