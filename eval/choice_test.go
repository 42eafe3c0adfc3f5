package eval

import (
	"strings"
	"testing"
)

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

// TestItemDocs: a generic item's choices continue its context after a
// space, unless the context ends in whitespace.
func TestItemDocs(t *testing.T) {
	docs := ItemDocs("g", []Item{{Context: "a", Choices: []string{"b", "cé"}, Label: 1}, {Context: "x\n", Choices: []string{"y", "z"}}})
	r := docs[0].Requests
	if len(docs) != 2 || docs[0].Gold != 1 || r[0].Continuation != " b" || r[1].Continuation != " cé" || r[1].Task != "g" ||
		docs[0].ChoiceChars[1] != 2 || docs[1].Requests[0].Continuation != "y" || docs[1].Requests[1].Doc != 1 {
		t.Fatalf("%+v", docs)
	}
}
