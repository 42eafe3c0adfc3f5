package tokenizer

import (
	"slices"
	"strings"
	"testing"
)

// TestJSONFromSentencePiece: the tokenizer.json rendering of the
// Nemotron-style BPE model, read back by the tokenizer.json path, gives the
// reference library's ids and text on every golden sample.
func TestJSONFromSentencePiece(t *testing.T) {
	sp, samples := loadGolden(t, "spm-nemotron-style")
	b, err := sp.TokenizerJSON()
	if err != nil {
		t.Fatal(err)
	}
	js, err := ParseJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	if js.VocabSize() != sp.VocabSize() || js.BOS() != sp.BOS() || js.EOS() != sp.EOS() {
		t.Fatalf("vocab %d bos %d eos %d", js.VocabSize(), js.BOS(), js.EOS())
	}
	checked := 0
	for _, s := range samples {
		if strings.Contains(s.Text, "<s>") || strings.Contains(s.Text, "</s>") {
			// The tokenizers library splits added tokens out of raw text;
			// sentencepiece does not. Checked below.
			continue
		}
		checked++
		if got := js.Encode(s.Text); !slices.Equal(got, s.IDs) {
			t.Errorf("%q:\n got %v\nwant %v", s.Text, got, s.IDs)
		}
		if got := js.Decode(s.IDs); got != s.Decoded {
			t.Errorf("decode %q, want %q", got, s.Decoded)
		}
	}
	if checked < 15 {
		t.Fatalf("only %d samples checked", checked)
	}
	// Special tokens in the text are split out, and each side is normalized
	// on its own (so "b" gets its own prefix space, as in the library).
	ids := js.Encode("a</s>b")
	want := append(append(sp.Encode("a"), sp.EOS()), sp.Encode("b")...)
	if !slices.Equal(ids, want) || js.Decode(ids) != "a b" {
		t.Fatalf("special token: %v (%q), want %v", ids, js.Decode(ids), want)
	}
	if _, err := (func() (*JSON, error) {
		mod := strings.Replace(string(b), `"type": "BPE"`, `"type": "WordPiece"`, 1)
		return ParseJSON([]byte(mod))
	})(); err == nil || !strings.Contains(err.Error(), "WordPiece") {
		t.Fatalf("unsupported model: %v", err)
	}
}

// TestJSONMetaspace covers the newer layout: no normalizer and a Metaspace
// pre-tokenizer with prepend_scheme "first". It adds the prefix only when
// the text does not already start with a space, so texts that do are
// encoded differently from sentencepiece, as in the tokenizers library.
func TestJSONMetaspace(t *testing.T) {
	sp, samples := loadGolden(t, "spm-nemotron-style")
	b, _ := sp.TokenizerJSON()
	s := string(b)
	i := strings.Index(s, `"normalizer":`)
	j := strings.Index(s, `"padding":`)
	s = s[:i] + s[j:]
	s = strings.Replace(s, `"pre_tokenizer": null`, `"pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": false}`, 1)
	js, err := ParseJSON([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	for _, smp := range samples {
		if strings.HasPrefix(smp.Text, " ") || strings.Contains(smp.Text, "<s>") {
			continue
		}
		if got := js.Encode(smp.Text); !slices.Equal(got, smp.IDs) {
			t.Errorf("%q:\n got %v\nwant %v", smp.Text, got, smp.IDs)
		}
		if got := js.Decode(smp.IDs); got != smp.Decoded {
			t.Errorf("decode %q, want %q", got, smp.Decoded)
		}
	}
	// "  a" already starts with the replacement: no prefix is added.
	if got, want := js.Encode("  a"), sp.Encode(" a"); !slices.Equal(got, want) {
		t.Fatalf("leading spaces: %v, want %v", got, want)
	}
	// With split, every word is encoded on its own.
	split := strings.Replace(s, `"split": false`, `"split": true`, 1)
	js2, err := ParseJSON([]byte(split))
	if err != nil {
		t.Fatal(err)
	}
	var want []int32
	for _, w := range []string{"Hello,", " world!"} {
		want = append(want, js.Encode(strings.TrimPrefix(w, " "))...)
	}
	if got := js2.Encode("Hello, world!"); !slices.Equal(got, want) {
		t.Fatalf("split: %v, want %v", got, want)
	}
}
