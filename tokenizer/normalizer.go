package tokenizer

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf8"
)

// spaceSymbol is U+2581, which SentencePiece uses for whitespace in pieces.
const spaceSymbol = "\u2581"

// normalizer implements SentencePiece's normalization: the precompiled
// character map (longest-match rewriting rules, e.g. NFKC), whitespace
// cleanup, the dummy prefix and whitespace escaping. User-defined symbols
// pass through untouched.
type normalizer struct {
	rules           *dartsTrie
	ruleText        string // NUL-separated replacement strings
	user            *trie
	addDummyPrefix  bool
	removeExtraWS   bool
	escapeWS        bool
	treatWSAsSuffix bool
	// plain marks the ASCII bytes other than space that begin no rule and
	// no user-defined symbol: each is its own normalized form.
	plain [128]bool
}

func newNormalizer(m *protoModel, user *trie) (*normalizer, error) {
	n := &normalizer{user: user, addDummyPrefix: m.addDummyPrefix, removeExtraWS: m.removeExtraWS,
		escapeWS: m.escapeWS, treatWSAsSuffix: m.treatWSAsSuffix}
	if len(m.charsmap) > 0 {
		b := m.charsmap
		if len(b) <= 4 {
			return nil, fmt.Errorf("precompiled_charsmap of %d bytes is broken", len(b))
		}
		size := binary.LittleEndian.Uint32(b)
		if uint64(size) >= uint64(len(b)) {
			return nil, fmt.Errorf("precompiled_charsmap: trie of %d bytes exceeds the %d-byte blob", size, len(b))
		}
		d, err := newDarts(b[4 : 4+size])
		if err != nil {
			return nil, fmt.Errorf("precompiled_charsmap: %w", err)
		}
		n.rules, n.ruleText = d, string(b[4+size:])
	}
	n.markPlain()
	return n, nil
}

// markPlain fills plain from the rules and the user-defined symbols.
func (n *normalizer) markPlain() {
	for c := range n.plain {
		n.plain[c] = c != ' ' && (n.rules == nil || !n.rules.startsKey(byte(c))) && (n.user == nil || n.user.root[c] < 0)
	}
}

// prefix returns the normalized form of the longest unit at the start of s
// and the number of input bytes it consumes.
func (n *normalizer) prefix(s string) (string, int) {
	if n.user != nil {
		if l, _ := n.user.longest(s); l > 0 {
			return s[:l], l
		}
	}
	if n.rules != nil {
		if v, l := n.rules.longestPrefix(s); l > 0 {
			if v >= len(n.ruleText) {
				return "\uFFFD", l
			}
			t := n.ruleText[v:]
			if i := strings.IndexByte(t, 0); i >= 0 {
				t = t[:i]
			}
			return t, l
		}
	}
	r, size := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && size == 1 {
		return "\uFFFD", 1 // malformed UTF-8: one byte becomes U+FFFD
	}
	return s[:size], size
}

// normalize returns the normalized text the model segments.
func (n *normalizer) normalize(s string) string {
	if n.removeExtraWS {
		for len(s) > 0 {
			p, c := n.prefix(s)
			if p != " " {
				break
			}
			s = s[c:]
		}
	}
	if len(s) == 0 {
		return ""
	}
	var b strings.Builder
	b.Grow(len(s) + len(s)/2 + 3)
	ws := " "
	if n.escapeWS {
		ws = spaceSymbol
	}
	if !n.treatWSAsSuffix && n.addDummyPrefix {
		b.WriteString(ws)
	}
	prevSpace := n.removeExtraWS
	for len(s) > 0 {
		if s[0] < 0x80 && n.plain[s[0]] {
			// A stretch of plain bytes is copied as the one-byte units
			// would be: unchanged, and none is a space.
			j := 1
			for j < len(s) && s[j] < 0x80 && n.plain[s[j]] {
				j++
			}
			b.WriteString(s[:j])
			s, prevSpace = s[j:], false
			continue
		}
		p, c := n.prefix(s)
		s = s[c:]
		for prevSpace && len(p) > 0 && p[0] == ' ' {
			p = p[1:]
		}
		if len(p) > 0 {
			if n.escapeWS {
				for i := 0; i < len(p); i++ {
					if p[i] == ' ' {
						b.WriteString(spaceSymbol)
					} else {
						b.WriteByte(p[i])
					}
				}
			} else {
				b.WriteString(p)
			}
			prevSpace = p[len(p)-1] == ' '
		}
		if !n.removeExtraWS {
			prevSpace = false
		}
	}
	out := b.String()
	if n.removeExtraWS {
		for strings.HasSuffix(out, ws) {
			out = out[:len(out)-len(ws)]
		}
	}
	if n.treatWSAsSuffix && n.addDummyPrefix {
		out += ws
	}
	return out
}
