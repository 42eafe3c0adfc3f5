package generate

import (
	"strings"

	"github.com/minitron/minitron/tokenizer"
)

// TextStream turns generated tokens into text as they come, applying stop
// strings: it decodes the prompt and the tokens together (so a piece's
// leading space and multi-byte characters come out right), releases text
// up to the first stop string, and holds back a tail that could still
// become a stop string or an incomplete character (U+FFFD) until it is
// decided.
type TextStream struct {
	tok      tokenizer.Tokenizer
	prompt   []int32
	gen      []int32
	base     string
	emitted  int
	stops    []string
	stopped  bool
	finalLen int
}

// NewTextStream starts a stream after prompt; stops may be empty.
func NewTextStream(tok tokenizer.Tokenizer, prompt []int32, stops []string) *TextStream {
	return &TextStream{tok: tok, prompt: prompt, base: tok.Decode(prompt), stops: stops}
}

func (t *TextStream) text() string {
	return strings.TrimPrefix(t.tok.Decode(append(append([]int32(nil), t.prompt...), t.gen...)), t.base)
}

// Add appends a token and returns the text that may be released now.
func (t *TextStream) Add(tok int32) string {
	t.gen = append(t.gen, tok)
	full := t.text()
	for _, s := range t.stops {
		if i := strings.Index(full, s); i >= 0 && (!t.stopped || i < t.finalLen) {
			t.stopped, t.finalLen = true, i
		}
	}
	if t.stopped {
		out := ""
		if t.finalLen > t.emitted {
			out = full[t.emitted:t.finalLen]
		}
		t.emitted = max(t.emitted, t.finalLen)
		return out
	}
	// Hold back a suffix that is a prefix of a stop string, and a
	// trailing replacement character (a multi-byte character cut short).
	hold := 0
	for _, s := range t.stops {
		for k := min(len(s)-1, len(full)); k > hold; k-- {
			if strings.HasSuffix(full, s[:k]) {
				hold = k
				break
			}
		}
	}
	// A character of three or four bytes shows as several U+FFFD until
	// its last byte comes: hold them all.
	trail := 0
	for strings.HasSuffix(full[:len(full)-trail], "\uFFFD") {
		trail += len("\uFFFD")
	}
	hold = max(hold, trail)
	end := len(full) - hold
	if end <= t.emitted {
		return ""
	}
	out := full[t.emitted:end]
	t.emitted = end
	return out
}

// Stopped reports whether a stop string has appeared: nothing after it is
// released.
func (t *TextStream) Stopped() bool { return t.stopped }

// Flush releases what is left at the end.
func (t *TextStream) Flush() string {
	full := t.text()
	end := len(full)
	if t.stopped {
		end = t.finalLen
	}
	if end <= t.emitted {
		return ""
	}
	out := full[t.emitted:end]
	t.emitted = end
	return out
}

// pieceWindow is how many preceding tokens decide a token's text: enough
// for the longest byte-fallback character (4 bytes) and a word boundary.
const pieceWindow = 8

// pieceText is the text token id adds after the tokens before it (only the
// last pieceWindow of them matter). A character still incomplete at id
// (shown as U+FFFD) goes to the token that completes it, or, when it never
// completes, to the token after; special tokens add "". Over a sequence
// the pieces spell its decoded text.
func pieceText(tok tokenizer.Tokenizer, before []int32, id int32) string {
	before = before[max(0, len(before)-pieceWindow):]
	stable := func(s string) string {
		for strings.HasSuffix(s, "\uFFFD") {
			s = strings.TrimSuffix(s, "\uFFFD")
		}
		return s
	}
	a := stable(tok.Decode(before))
	b := stable(tok.Decode(append(append(make([]int32, 0, len(before)+1), before...), id)))
	if strings.HasPrefix(b, a) {
		return b[len(a):]
	}
	// The earlier text changed: the new part starts where the two differ.
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	for i > 0 && i < len(b) && b[i]&0xC0 == 0x80 { // back to a character start
		i--
	}
	return b[i:]
}
