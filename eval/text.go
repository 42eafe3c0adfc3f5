package eval

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Python's string methods, as the harness's task definitions use them.

// pySpace is str.isspace for one character: Unicode White_Space plus the
// four ASCII separators \x1c-\x1f, which Python counts as whitespace.
func pySpace(r rune) bool { return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f }

// pyStrip is str.strip().
func pyStrip(s string) string { return strings.TrimFunc(s, pySpace) }

// pyRStrip is str.rstrip().
func pyRStrip(s string) string { return strings.TrimRightFunc(s, pySpace) }

// titleFull holds the characters whose full title-case mapping (which
// str.capitalize uses for the first character) is more than one character.
var titleFull = map[rune]string{
	'ß': "Ss", 'ŉ': "ʼN", 'ǰ': "J̌", 'ﬀ': "Ff", 'ﬁ': "Fi", 'ﬂ': "Fl", 'ﬃ': "Ffi", 'ﬄ': "Ffl", 'ﬅ': "St", 'ﬆ': "St",
}

// pyCapitalize is str.capitalize() (Python 3.8 and later): the first
// character in title case, the rest in lower case, with the full mappings
// of İ and of a word-final Σ that str.lower applies.
func pyCapitalize(s string) string {
	if s == "" {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	var b strings.Builder
	if t, ok := titleFull[r]; ok {
		b.WriteString(t)
	} else {
		b.WriteRune(unicode.ToTitle(r))
	}
	rest := []rune(s[n:])
	for i, c := range rest {
		switch {
		case c == 'İ':
			b.WriteString("i\u0307")
		case c == 'Σ' && finalSigma(append([]rune{r}, rest...), i+1):
			b.WriteRune('ς')
		default:
			b.WriteRune(unicode.ToLower(c))
		}
	}
	return b.String()
}

// finalSigma is Unicode's Final_Sigma condition at position i of s: a
// cased letter before (skipping case-ignorable ones) and none after.
func finalSigma(s []rune, i int) bool {
	cased := func(r rune) bool { return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) }
	ignorable := func(r rune) bool {
		return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk) || r == '\'' || r == '.' || r == ':' || r == '·'
	}
	before := false
	for j := i - 1; j >= 0; j-- {
		if ignorable(s[j]) {
			continue
		}
		before = cased(s[j])
		break
	}
	if !before {
		return false
	}
	for j := i + 1; j < len(s); j++ {
		if ignorable(s[j]) {
			continue
		}
		return !cased(s[j])
	}
	return true
}

var bracketed = regexp.MustCompile(`\[.*?\]`)

// hellaswagPreprocess is the harness's hellaswag/utils.py preprocess:
// strip, " [title]" becomes ". ", bracketed WikiHow artifacts are removed,
// double spaces become single (one pass, as str.replace does).
func hellaswagPreprocess(text string) string {
	text = pyStrip(text)
	text = strings.ReplaceAll(text, " [title]", ". ")
	text = bracketed.ReplaceAllString(text, "")
	return strings.ReplaceAll(text, "  ", " ")
}
