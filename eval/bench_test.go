package eval

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// syntheticDocs builds n documents of a task from generated rows in the
// hub's schema (words drawn from Go source vocabulary, which the tiny
// teacher's tokenizer knows): MMLU 5-shot items of 4 one-letter answers,
// or HellaSwag 10-shot items of 4 multi-token endings.
func syntheticDocs(b testing.TB, task string, n int) []Doc {
	b.Helper()
	words := strings.Fields("func return err nil if for range map string int byte type struct interface package import var const go defer select case chan make len append copy new panic recover")
	rng := rand.New(rand.NewPCG(1, 2))
	phrase := func(k int) string {
		var p []string
		for range k {
			p = append(p, words[rng.IntN(len(words))])
		}
		return strings.Join(p, " ")
	}
	dir := b.TempDir()
	write := func(name string, rows []map[string]any) {
		var sb strings.Builder
		for _, r := range rows {
			j, _ := json.Marshal(r)
			sb.Write(append(j, '\n'))
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(sb.String()), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	var eval, shots []map[string]any
	switch task {
	case "mmlu":
		subjects := []string{"computer_security", "college_computer_science", "machine_learning"}
		row := func(i int) map[string]any {
			return map[string]any{"question": phrase(12) + "?", "subject": subjects[i%3],
				"choices": []string{phrase(3), phrase(3), phrase(3), phrase(3)}, "answer": rng.IntN(4)}
		}
		for i := range n {
			eval = append(eval, row(i))
		}
		for i := range 15 {
			shots = append(shots, row(i))
		}
		write("test.jsonl", eval)
		write("dev.jsonl", shots)
	case "hellaswag":
		row := func() map[string]any {
			return map[string]any{"activity_label": phrase(2), "ctx_a": phrase(14) + ".", "ctx_b": phrase(4),
				"endings": []string{phrase(8), phrase(9), phrase(10), phrase(7)}, "label": fmt.Sprint(rng.IntN(4))}
		}
		for range n {
			eval = append(eval, row())
		}
		for range 200 {
			shots = append(shots, row())
		}
		write("validation.jsonl", eval)
		write("train.jsonl", shots)
	}
	d, err := OpenDataset(dir)
	if err != nil {
		b.Fatal(err)
	}
	docs, err := tasks[task].Build(context.Background(), d, BuildOptions{Shots: -1})
	if err != nil {
		b.Fatal(err)
	}
	return docs
}

// BenchmarkScore scores 240 synthetic MMLU (5-shot) and 60 HellaSwag
// (10-shot) documents on the tiny teacher: "plain" is one forward pass per
// document with its choices side by side (the scoring before batching, the
// anchor), "batched" the default. Reported: requests per second.
//
//	go test ./eval -run '^$' -bench Score -benchtime 3x
func BenchmarkScore(b *testing.B) {
	m, tok := tinyTeacher(b)
	for _, task := range []struct {
		name string
		n    int
	}{{"mmlu", 240}, {"hellaswag", 60}} {
		docs := syntheticDocs(b, task.name, task.n)
		reqs := 0
		for _, d := range docs {
			reqs += len(d.Requests)
		}
		for _, mode := range []string{"plain", "batched"} {
			b.Run(task.name+"/"+mode, func(b *testing.B) {
				opt := ScoreOptions{Plain: mode == "plain"}
				start, runs := time.Now(), 0
				for b.Loop() {
					if _, err := Score(context.Background(), m, tok, docs, opt); err != nil {
						b.Fatal(err)
					}
					runs++
				}
				b.ReportMetric(float64(reqs*runs)/time.Since(start).Seconds(), "requests/s")
			})
		}
	}
}
