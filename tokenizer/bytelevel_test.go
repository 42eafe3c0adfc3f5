package tokenizer

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// loadByteLevel reads the byte-level BPE test tokenizer: Llama 3's
// tokenizer.json layout (Split with its pattern, ByteLevel, ignore_merges,
// 256 special added tokens) over the first 3,000 usable merges of its
// vocabulary, and goldens made with Hugging Face's tokenizers.js (see
// testdata/tokenizer/README.md).
func loadByteLevel(t testing.TB) (*JSON, []goldenSample) {
	t.Helper()
	tok, err := LoadJSON("../testdata/tokenizer/bytelevel-llama3-3k.tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../testdata/tokenizer/bytelevel-llama3-3k.golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g struct{ Samples []goldenSample }
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return tok, g.Samples
}

func TestByteLevelGolden(t *testing.T) {
	tok, samples := loadByteLevel(t)
	if tok.BOS() < 0 || tok.Piece(tok.BOS()) != "<|begin_of_text|>" || tok.Piece(tok.EOS()) != "<|end_of_text|>" {
		t.Fatalf("bos %d %q eos %d", tok.BOS(), tok.Piece(tok.BOS()), tok.EOS())
	}
	for _, s := range samples {
		got := tok.Encode(s.Text)
		if !slices.Equal(got, s.IDs) {
			t.Errorf("%q:\n got %v\nwant %v", s.Text, got, s.IDs)
			continue
		}
		// Decode drops special tokens; the reference kept them.
		want := strings.NewReplacer("<|begin_of_text|>", "", "<|end_of_text|>", "").Replace(s.Decoded)
		if d := tok.Decode(s.IDs); d != want {
			t.Errorf("decode %q, want %q", d, want)
		}
	}
	if len(samples) < 40 {
		t.Fatalf("only %d samples", len(samples))
	}
}

// TestSplitters checks the pre-tokenizers on cases that pin each
// alternative of the patterns, written out by hand from the regular
// expressions' semantics.
func TestSplitters(t *testing.T) {
	split := func(f splitter, s string) []string {
		var out []string
		for len(s) > 0 {
			n := f(s)
			out = append(out, s[:n])
			s = s[n:]
		}
		return out
	}
	llama3 := knownSplitters[llama3Pattern]
	gpt2 := knownSplitters[gpt2Pattern]
	for _, c := range []struct {
		f    splitter
		in   string
		want []string
	}{
		{llama3, "Hello world", []string{"Hello", " world"}},
		{llama3, "I'M here", []string{"I", "'M", " here"}},
		{llama3, "it'll be", []string{"it", "'ll", " be"}},
		{llama3, "12345", []string{"123", "45"}},
		{llama3, "a  b", []string{"a", " ", " b"}},
		{llama3, "a   \n\n  b", []string{"a", "   \n\n", " ", " b"}},
		{llama3, "x;\r\ny", []string{"x", ";\r\n", "y"}},
		{llama3, "end   ", []string{"end", "   "}},
		{llama3, "(paren)", []string{"(paren", ")"}},
		{llama3, " !!", []string{" !!"}},
		{llama3, "\t!", []string{"\t", "!"}},
		{gpt2, "Hello world", []string{"Hello", " world"}},
		{gpt2, "I'M here", []string{"I", "'", "M", " here"}}, // case-sensitive contractions
		{gpt2, "12345 67", []string{"12345", " 67"}},
		{gpt2, "a  b", []string{"a", " ", " b"}},
		{gpt2, "(paren)", []string{"(", "paren", ")"}},
		{knownSplitters[qwen2Pattern], "1234", []string{"1", "2", "3", "4"}},
	} {
		if got := split(c.f, c.in); !slices.Equal(got, c.want) {
			t.Errorf("%q: %q, want %q", c.in, got, c.want)
		}
	}
}

func TestByteLevelUnsupported(t *testing.T) {
	b, err := os.ReadFile("../testdata/tokenizer/bytelevel-llama3-3k.tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	mod := strings.Replace(string(b), `\\p{N}{1,3}`, `\\p{N}{1,4}`, 1)
	if _, err := ParseJSON([]byte(mod)); err == nil || !strings.Contains(err.Error(), "pattern") {
		t.Fatalf("unknown pattern: %v", err)
	}
}

// FuzzByteLevelRoundTrip: byte-level BPE is lossless on valid UTF-8 (text
// holding special-token strings aside, which encode to dropped tokens).
func FuzzByteLevelRoundTrip(f *testing.F) {
	tok, samples := loadByteLevel(f)
	for _, s := range samples {
		f.Add(s.Text)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) || strings.Contains(s, "<|") {
			return
		}
		if got := tok.Decode(tok.Encode(s)); got != s {
			t.Fatalf("%q -> %v -> %q", s, tok.Encode(s), got)
		}
	})
}
