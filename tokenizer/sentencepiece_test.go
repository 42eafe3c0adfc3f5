package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const fixtures = "../testdata/tokenizer"

var fixtureModels = []string{"spm-nemotron-style", "spm-bpe", "spm-unigram"}

type goldenSample struct {
	Text    string   `json:"text"`
	IDs     []int32  `json:"ids"`
	Pieces  []string `json:"pieces"`
	Decoded string   `json:"decoded"`
}

func loadGolden(t testing.TB, name string) (*SentencePiece, []goldenSample) {
	t.Helper()
	sp, err := LoadSentencePiece(filepath.Join(fixtures, name+".model"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(fixtures, name+".golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Samples []goldenSample `json:"samples"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return sp, g.Samples
}

// TestGoldenParity: ids, pieces and decoded text identical to sentencepiece.
func TestGoldenParity(t *testing.T) {
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			sp, samples := loadGolden(t, name)
			for _, s := range samples {
				ids := sp.Encode(s.Text)
				if !slices.Equal(ids, s.IDs) {
					var pieces []string
					for _, id := range ids {
						pieces = append(pieces, sp.Piece(id))
					}
					t.Errorf("%q:\n got %v %q\nwant %v %q", s.Text, ids, pieces, s.IDs, s.Pieces)
					continue
				}
				for i, id := range ids {
					if sp.Piece(id) != s.Pieces[i] {
						t.Errorf("%q: piece %d is %q, want %q", s.Text, i, sp.Piece(id), s.Pieces[i])
					}
				}
				if got := sp.Decode(s.IDs); got != s.Decoded {
					t.Errorf("decode %v:\n got %q\nwant %q", s.IDs, got, s.Decoded)
				}
			}
		})
	}
}

func TestTrie(t *testing.T) {
	var keys []string
	var vals []int32
	for i := range 3000 {
		keys = append(keys, string(rune('a'+i%26))+string(rune(0x100+i)))
		vals = append(vals, int32(i))
	}
	keys = append(keys, "a", "ab", "abc")
	vals = append(vals, 5000, 5001, 5002)
	tr := newTrie(keys, vals)
	for i, k := range keys {
		if l, v := tr.longest(k); l != len(k) || v != vals[i] {
			t.Fatalf("%q: longest (%d, %d), want (%d, %d)", k, l, v, len(k), vals[i])
		}
	}
	var got []int
	tr.prefixes("abcd", func(l int, v int32) bool { got = append(got, l); return true })
	if !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("prefixes of abcd: %v", got)
	}
	if l, _ := tr.longest("zz"); l != 0 {
		t.Fatal("found a missing key")
	}
}

// normalizedText is what decoding should give back: the normalized text
// with U+2581 as spaces and the dummy prefix removed.
func normalizedText(sp *SentencePiece, s string) string {
	n := strings.ReplaceAll(sp.norm.normalize(s), spaceSymbol, " ")
	if sp.norm.addDummyPrefix || sp.norm.removeExtraWS {
		n = strings.TrimPrefix(n, " ")
	}
	return n
}

func FuzzRoundTrip(f *testing.F) {
	var models []*SentencePiece
	for _, name := range fixtureModels {
		sp, samples := loadGolden(f, name)
		models = append(models, sp)
		for _, s := range samples {
			f.Add(s.Text)
		}
	}
	f.Add("\xff\xfe invalid \xc3 utf-8 \xed\xa0\x80 surrogate")
	f.Add("\u2581already\u2581escaped")
	f.Add("\x00\x01 control \r\n chars \u200b zero width")
	f.Fuzz(func(t *testing.T, s string) {
		for i, sp := range models {
			ids := sp.Encode(s)
			if got, want := sp.Decode(ids), normalizedText(sp, s); got != want {
				t.Fatalf("%s: decode(encode(%q)) = %q, want %q", fixtureModels[i], s, got, want)
			}
		}
	})
}

func TestCorruptModels(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(fixtures, "spm-bpe.model"))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"truncated": good[:len(good)/2],
		"empty":     {},
		"garbage":   []byte("this is not a protobuf \xff\xff\xff\xff\xff"),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.model")
			os.WriteFile(p, b, 0o644)
			_, err := LoadSentencePiece(p)
			if err == nil || !strings.Contains(err.Error(), p) {
				t.Fatalf("error %v: want one naming %s", err, p)
			}
		})
	}
}

// TestIsolatingSplit: splitting BPE at isolating bytes gives the same ids
// as one pass over the whole text, on real multi-line documents.
func TestIsolatingSplit(t *testing.T) {
	lines := goSourceLines(t, 1<<20)
	var docs []string
	for i := 0; i+40 <= len(lines); i += 40 {
		docs = append(docs, strings.Join(lines[i:i+40], "\n\t\n"))
	}
	for _, name := range []string{"spm-nemotron-style", "spm-bpe"} {
		sp, _ := loadGolden(t, name)
		whole := *sp
		whole.isolating = [128]bool{}
		n := 0
		for c, iso := range sp.isolating {
			if iso && strings.ContainsRune(strings.Join(docs[:5], ""), rune(c)) {
				n++
			}
		}
		if name == "spm-nemotron-style" && n == 0 {
			t.Fatalf("%s: no isolating byte occurs in the test documents", name)
		}
		for _, d := range docs {
			if a, b := sp.Encode(d), whole.Encode(d); !slices.Equal(a, b) {
				t.Fatalf("%s: split and whole encodings differ", name)
			}
		}
	}
}

// noBOS is a tokenizer without a BOS token.
type noBOS struct{ *SentencePiece }

func (noBOS) BOS() int32 { return -1 }

// TestEncodePrompt: a prompt is BOS (when there is one) and the text's ids
// as sentencepiece encodes them, nothing else.
func TestEncodePrompt(t *testing.T) {
	sp, samples := loadGolden(t, "spm-nemotron-style")
	g := samples[0]
	if sp.BOS() < 0 {
		t.Fatal("the fixture has a BOS token")
	}
	if got, want := EncodePrompt(sp, g.Text), append([]int32{sp.BOS()}, g.IDs...); !slices.Equal(got, want) {
		t.Fatalf("prompt %v, want %v", got, want)
	}
	if got := EncodePrompt(noBOS{sp}, g.Text); !slices.Equal(got, g.IDs) {
		t.Fatalf("without BOS: %v, want %v", got, g.IDs)
	}
}

// TestRunCacheParity: the run cache and the word split give the ids of
// merging each run between isolating bytes afresh (which TestIsolatingSplit
// holds equal to one pass over the whole text), on whole Go files encoded by
// several goroutines at once, with the committed models and with synthetic
// ones that have user-defined and unused pieces.
func TestRunCacheParity(t *testing.T) {
	files := goSourceFiles(t, 1<<20)
	// Repeated runs with an unknown character, a byte-fallback character
	// and doubled spaces, so those paths go through the cache too.
	files = append(files, strings.Repeat("x := \u4e16\u754c  // \u00e9t\u00e9\x00\t\n", 50))
	load := func(path string) func() (*SentencePiece, error) {
		return func() (*SentencePiece, error) { return LoadSentencePiece(path) }
	}
	synthetic := func(types map[string]int) func() (*SentencePiece, error) {
		return func() (*SentencePiece, error) {
			pieces := syntheticPieces(3000)
			for p := range types {
				if !slices.Contains(pieces, p) {
					pieces = append(pieces, p)
				}
			}
			return ParseSentencePiece(syntheticModelTyped(pieces, types, modelBPE))
		}
	}
	// pieces[100:110] of syntheticPieces(3000) are merged pieces.
	unused := map[string]int{}
	for _, p := range syntheticPieces(3000)[100:110] {
		unused[p] = typeUnused
	}
	models := []struct {
		name    string
		load    func() (*SentencePiece, error)
		wordCut bool
	}{
		{"tiny-teacher", load(tinyTeacherTokenizer), true},
		{"spm-nemotron-style", load(filepath.Join(fixtures, "spm-nemotron-style.model")), true},
		{"spm-bpe", load(filepath.Join(fixtures, "spm-bpe.model")), true},
		{"user-defined", synthetic(map[string]int{"func": typeUserDefined, "\u2581return": typeUserDefined, "e\t": typeUserDefined}), true},
		{"user-defined-inner-space", synthetic(map[string]int{"func": typeUserDefined, "r\u2581err": typeUserDefined}), false},
		{"unused", synthetic(unused), false},
	}
	for _, m := range models {
		t.Run(m.name, func(t *testing.T) {
			sp, err := m.load()
			if err != nil {
				t.Fatal(err)
			}
			if sp.wordCut != m.wordCut {
				t.Fatalf("wordCut is %v, want %v", sp.wordCut, m.wordCut)
			}
			ref := *sp
			ref.wordCut, ref.noRunCache = false, true
			ref.scratch = make(chan *bpeScratch, 1)
			want := make([][]int32, len(files))
			for i, f := range files {
				want[i] = ref.Encode(f)
			}
			const workers = 3
			errs := make(chan error, workers)
			for w := range workers {
				go func() {
					// Every worker encodes every file twice, so later
					// encodings come from a warm cache.
					for pass := range 2 {
						for i := range files {
							j := (i + w*len(files)/workers) % len(files)
							if got := sp.Encode(files[j]); !slices.Equal(got, want[j]) {
								errs <- fmt.Errorf("pass %d, file %d: %d ids differ from the %d of merging each run afresh", pass, j, len(got), len(want[j]))
								return
							}
						}
					}
					errs <- nil
				}()
			}
			for range workers {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestRunCacheBounds: a cache that overflows drops its older generation,
// keeps the runs in use, and answers with the segments stored for each run.
func TestRunCacheBounds(t *testing.T) {
	var c runCache
	entries := func() int { return len(c.cur.index) + len(c.old.index) }
	for i := range 3 * runCacheMaxEntries {
		run := fmt.Sprintf("run%07d", i)
		norm := "\t" + run
		segs := []segment{{1, 4, int32(i)}, {4, len(norm), int32(i + 1)}}
		c.put(norm, 1, len(norm), segs)
		if entries() > 2*runCacheMaxEntries || c.cur.bytes > runCacheMaxBytes || c.old.bytes > runCacheMaxBytes {
			t.Fatalf("after %d runs the cache holds %d entries, %d+%d bytes", i+1, entries(), c.cur.bytes, c.old.bytes)
		}
		got, ok := c.get("xx"+run, 2, 2+len(run), nil)
		if want := []segment{{2, 5, int32(i)}, {5, 2 + len(run), int32(i + 1)}}; !ok || !slices.Equal(got, want) {
			t.Fatalf("run %q: got %v %v, want %v", run, got, ok, want)
		}
		// run0000000 is looked up all along, so it stays.
		if got, ok := c.get("run0000000", 0, 10, nil); !ok || !slices.Equal(got, []segment{{0, 3, 0}, {3, 10, 1}}) {
			t.Fatalf("after %d runs the first run is %v %v", i+1, got, ok)
		}
	}
	if _, ok := c.get("run0000001", 0, 10, nil); ok {
		t.Fatal("a run not used since was kept through several overflows")
	}
}

// TestNormalizePlain: copying stretches of plain ASCII bytes gives the
// normalized text of rewriting one unit at a time, with and without rules
// and user-defined symbols.
func TestNormalizePlain(t *testing.T) {
	docs := append(goSourceFiles(t, 256<<10),
		"  lead  and trail  ", "e\u0301 \uff21\uff22 \u2460 tab\there\x00\x7f\r\n", "func\tfuncs ab  cd", "\xff\xfe bad \xc3")
	for _, name := range fixtureModels {
		t.Run(name, func(t *testing.T) {
			sp, _ := loadGolden(t, name)
			for _, user := range []*trie{sp.norm.user, newTrie([]string{"func", "b "}, []int32{7, 8})} {
				fast := *sp.norm
				fast.user = user
				fast.markPlain()
				slow := fast
				slow.plain = [128]bool{}
				for _, d := range docs {
					if got, want := fast.normalize(d), slow.normalize(d); got != want {
						t.Fatalf("user %v: %.40q normalizes to %.80q, want %.80q", user != nil, d, got, want)
					}
				}
			}
		})
	}
}

// TestScratchKeepsNoHugeBuffers: after a document far longer than a
// scratch's bound, the scratches kept for the next encodings hold no buffer
// above it, and encoding still gives the same ids.
func TestScratchKeepsNoHugeBuffers(t *testing.T) {
	for _, name := range []string{"spm-bpe", "spm-unigram"} {
		t.Run(name, func(t *testing.T) {
			sp, err := LoadSentencePiece(filepath.Join(fixtures, name+".model"))
			if err != nil {
				t.Fatal(err)
			}
			doc := strings.Repeat("abcdefghij", keptScratch/4) // one run, no spaces
			want := sp.Encode(doc)
			if got := sp.Encode(doc); !slices.Equal(got, want) {
				t.Fatal("a second encoding of the document differs from the first")
			}
			for range len(sp.scratch) {
				sc := <-sp.scratch
				for what, c := range map[string]int{"symbols": cap(sc.syms), "heap": cap(sc.heap), "segments": cap(sc.segs), "lattice": cap(sc.best)} {
					if c > keptScratch {
						t.Errorf("a kept scratch holds %s for %d elements (bound %d)", what, c, keptScratch)
					}
				}
			}
		})
	}
}
