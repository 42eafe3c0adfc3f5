package eval

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// Item is one multiple-choice question: the context, the candidate
// continuations, and the index of the right one.
type Item struct {
	Context string
	Choices []string
	Label   int
}

// ReadItems reads a JSON lines file of multiple-choice items. Each line
// is one of
//
//	{"context": "...", "choices": ["...", ...], "label": 0}
//	{"ctx": "...", "endings": ["...", ...], "label": 0}          (HellaSwag)
//	{"question": "...", "choices": ["...", ...], "answer": 0}    (MMLU-style)
//
// A question is asked as "Question: ...\nAnswer:" with each choice as a
// continuation. Labels may be numbers or digit strings.
func ReadItems(r io.Reader, name string) ([]Item, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var items []Item
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var raw struct {
			Context  *string         `json:"context"`
			Ctx      *string         `json:"ctx"`
			Question *string         `json:"question"`
			Choices  []string        `json:"choices"`
			Endings  []string        `json:"endings"`
			Label    json.RawMessage `json:"label"`
			Answer   json.RawMessage `json:"answer"`
		}
		if err := json.Unmarshal([]byte(text), &raw); err != nil {
			return nil, fmt.Errorf("eval: %s:%d: %v", name, line, err)
		}
		var it Item
		label := raw.Label
		switch {
		case raw.Context != nil:
			it.Context, it.Choices = *raw.Context, raw.Choices
		case raw.Ctx != nil:
			it.Context, it.Choices = *raw.Ctx, raw.Endings
		case raw.Question != nil:
			it.Context, it.Choices, label = "Question: "+*raw.Question+"\nAnswer:", raw.Choices, raw.Answer
		default:
			return nil, fmt.Errorf("eval: %s:%d: no context, ctx or question field", name, line)
		}
		if len(it.Choices) < 2 {
			return nil, fmt.Errorf("eval: %s:%d: %d choices; a multiple-choice item needs at least 2", name, line, len(it.Choices))
		}
		var n int
		if err := json.Unmarshal(label, &n); err != nil {
			var s string
			if json.Unmarshal(label, &s) != nil || func() error { _, e := fmt.Sscanf(s, "%d", &n); return e }() != nil {
				return nil, fmt.Errorf("eval: %s:%d: the label must be a choice index (got %s)", name, line, string(label))
			}
		}
		if n < 0 || n >= len(it.Choices) {
			return nil, fmt.Errorf("eval: %s:%d: label %d outside the %d choices", name, line, n, len(it.Choices))
		}
		it.Label = n
		items = append(items, it)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("eval: %s: %w", name, err)
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("eval: %s holds no items", name)
	}
	return items, nil
}

// ReadItemsFile reads items from a file (see ReadItems).
func ReadItemsFile(path string) ([]Item, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	defer f.Close()
	return ReadItems(f, path)
}

// ItemDocs turns generic items into documents of a task named name: each
// choice a continuation of the context after a space (none when the
// context is empty or ends in whitespace), as the harness's target
// delimiter joins them.
func ItemDocs(name string, items []Item) []Doc {
	docs := make([]Doc, len(items))
	for i, it := range items {
		delim := " "
		if it.Context == "" || strings.ContainsAny(it.Context[len(it.Context)-1:], " \t\n") {
			delim = ""
		}
		d := Doc{Index: i, Gold: it.Label}
		for c, choice := range it.Choices {
			d.Requests = append(d.Requests, Request{Task: name, Doc: i, Choice: c, Context: it.Context, Continuation: delim + choice})
			d.ChoiceChars = append(d.ChoiceChars, utf8.RuneCountInString(choice))
		}
		docs[i] = d
	}
	return docs
}
