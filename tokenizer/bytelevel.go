package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Byte-level BPE (GPT-2, Llama 3, Qwen2, ...) works on bytes written as
// printable characters: the bytes of printable Latin-1 characters stand
// for themselves and the 68 others (controls, space, soft hyphen, ...) for
// U+0100 onwards, in byte order. Vocabulary entries are strings in that
// alphabet, so "Ġ" (U+0120) is a space.
var (
	byteRune [256]rune
	runeByte = map[rune]byte{}
)

func init() {
	next := rune(256)
	for b := 0; b < 256; b++ {
		r := rune(b)
		if !(b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE && b <= 0xFF) {
			r = next
			next++
		}
		byteRune[b] = r
		runeByte[r] = byte(b)
	}
}

// byteLevelString writes the bytes of s in the byte-level alphabet.
func byteLevelString(s string) string {
	var b strings.Builder
	b.Grow(2 * len(s))
	for i := 0; i < len(s); i++ {
		b.WriteRune(byteRune[s[i]])
	}
	return b.String()
}

// byteLevelBytes maps byte-level text back to bytes; characters outside
// the alphabet (added tokens) are kept as they are.
func byteLevelBytes(s string) []byte {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if b, ok := runeByte[r]; ok {
			out = append(out, b)
		} else {
			out = utf8.AppendRune(out, r)
		}
	}
	return out
}

// splitter cuts text into pre-tokens: it returns the length in bytes of
// the pre-token starting at s[0] (at least 1 for a non-empty s).
type splitter func(s string) int

// The regular expressions of the byte-level tokenizers we know, with the
// splitters that implement them exactly (Go's regexp has no look-ahead,
// which `\s+(?!\S)` needs).
const (
	// gpt2Pattern is the ByteLevel pre-tokenizer's own (use_regex: true).
	gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	// llama3Pattern is Llama 3's and tiktoken's cl100k_base.
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// qwen2Pattern is Llama 3's with single digits.
	qwen2Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

var knownSplitters = map[string]splitter{
	gpt2Pattern:   splitGPT2,
	llama3Pattern: func(s string) int { return splitCL100K(s, 3) },
	qwen2Pattern:  func(s string) int { return splitCL100K(s, 1) },
}

func decodeRune(s string, i int) (rune, int) {
	if i >= len(s) {
		return utf8.RuneError, 0
	}
	return utf8.DecodeRuneInString(s[i:])
}

func isL(r rune) bool { return unicode.IsLetter(r) }
func isN(r rune) bool { return unicode.IsNumber(r) }

// isS is \s of the reference regex engine in Unicode mode: White_Space.
func isS(r rune) bool { return unicode.IsSpace(r) }

// run returns the end of the run of runes from i that satisfy f.
func run(s string, i int, f func(rune) bool) int {
	for i < len(s) {
		r, n := decodeRune(s, i)
		if !f(r) {
			break
		}
		i += n
	}
	return i
}

// contraction matches 's 't 're 've 'm 'll 'd at s[0] (case-insensitively
// when fold), returning its length or 0.
func contraction(s string, fold bool) int {
	if len(s) < 2 || s[0] != '\'' {
		return 0
	}
	lower := func(i int) (rune, int) {
		r, n := decodeRune(s, i)
		if fold {
			if r == 'ſ' { // U+017F folds to s
				return 's', n
			}
			r = unicode.ToLower(r)
		}
		return r, n
	}
	r1, n1 := lower(1)
	switch r1 {
	case 's', 't', 'm', 'd':
		return 1 + n1
	case 'r', 'v', 'l':
		want := map[rune]rune{'r': 'e', 'v': 'e', 'l': 'l'}[r1]
		if r2, n2 := lower(1 + n1); r2 == want {
			return 1 + n1 + n2
		}
	}
	return 0
}

// spaceTail matches `\s+(?!\S)|\s+` at s[0], a whitespace run: all of it
// at the end of the text or when it is one character, else all but its
// last character (which then starts the next pre-token with the word).
func spaceTail(s string) int {
	end := run(s, 0, isS)
	if end == len(s) {
		return end
	}
	_, last := utf8.DecodeLastRuneInString(s[:end])
	if end-last > 0 {
		return end - last
	}
	return end
}

// splitGPT2 implements gpt2Pattern.
func splitGPT2(s string) int {
	if n := contraction(s, false); n > 0 {
		return n
	}
	i := 0
	if s[0] == ' ' {
		i = 1
	}
	if r, _ := decodeRune(s, i); i < len(s) {
		switch {
		case isL(r):
			return run(s, i, isL)
		case isN(r):
			return run(s, i, isN)
		case !isS(r):
			return run(s, i, func(r rune) bool { return !isS(r) && !isL(r) && !isN(r) })
		}
	}
	return spaceTail(s)
}

// splitCL100K implements llama3Pattern (digits 3) and qwen2Pattern
// (digits 1), alternative by alternative in the pattern's order.
func splitCL100K(s string, digits int) int {
	if n := contraction(s, true); n > 0 {
		return n
	}
	r0, n0 := decodeRune(s, 0)
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if r0 != '\r' && r0 != '\n' && !isL(r0) && !isN(r0) {
		if r1, _ := decodeRune(s, n0); n0 < len(s) && isL(r1) {
			return run(s, n0, isL)
		}
	}
	if isL(r0) {
		return run(s, 0, isL)
	}
	// \p{N}{1,digits}
	if isN(r0) {
		i := 0
		for k := 0; k < digits && i < len(s); k++ {
			r, n := decodeRune(s, i)
			if !isN(r) {
				break
			}
			i += n
		}
		return i
	}
	// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
	punct := func(r rune) bool { return !isS(r) && !isL(r) && !isN(r) }
	i := 0
	if r0 == ' ' {
		i = 1
	}
	if r, _ := decodeRune(s, i); i < len(s) && punct(r) {
		i = run(s, i, punct)
		return run(s, i, func(r rune) bool { return r == '\r' || r == '\n' })
	}
	// \s*[\r\n]+: whitespace up to and including its last line break.
	end := run(s, 0, isS)
	if k := strings.LastIndexAny(s[:end], "\r\n"); k >= 0 {
		return k + 1
	}
	return spaceTail(s)
}
