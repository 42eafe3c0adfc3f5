package generate

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/minitron/minitron/tokenizer"
)

// TestTextStream: streamed pieces spell the decoded text exactly, never
// release half a character, and stop before a stop string.
func TestTextStream(t *testing.T) {
	tok, err := tokenizer.LoadSentencePiece("../testdata/tokenizer/spm-nemotron-style.model")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../testdata/tokenizer/spm-nemotron-style.golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Samples []struct {
			IDs []int32 `json:"ids"`
		} `json:"samples"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	for _, s := range g.Samples {
		// A prompt is whole text: cut after the first tokens that decode
		// to a prefix of the text with no character left half done.
		k := 1
		for k < len(s.IDs)-1 {
			p := tok.Decode(s.IDs[:k])
			if !strings.HasSuffix(p, "\uFFFD") && strings.HasPrefix(tok.Decode(s.IDs), p) {
				break
			}
			k++
		}
		if len(s.IDs)-k < 2 {
			continue
		}
		prompt, gen := s.IDs[:k], s.IDs[k:]
		want := strings.TrimPrefix(tok.Decode(s.IDs), tok.Decode(prompt))
		ts := NewTextStream(tok, prompt, nil)
		var got strings.Builder
		for _, id := range gen {
			piece := ts.Add(id)
			if strings.HasSuffix(piece, "\uFFFD") {
				t.Fatalf("%v: a piece ends in half a character: %q", s.IDs, piece)
			}
			got.WriteString(piece)
		}
		got.WriteString(ts.Flush())
		if got.String() != want {
			t.Errorf("%v: streamed %q, decoded %q", s.IDs, got.String(), want)
		}
		// A stop string in the middle: the text before it, nothing after.
		if len(want) > 6 {
			stop := want[len(want)/2 : len(want)/2+2]
			ts := NewTextStream(tok, prompt, []string{stop})
			var cut strings.Builder
			for _, id := range gen {
				cut.WriteString(ts.Add(id))
			}
			cut.WriteString(ts.Flush())
			if w := want[:strings.Index(want, stop)]; cut.String() != w || !ts.Stopped() {
				t.Errorf("%v with stop %q: %q (stopped %v), want %q", s.IDs, stop, cut.String(), ts.Stopped(), w)
			}
		}
	}
}
