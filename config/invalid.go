package config

import (
	"fmt"
	"regexp"
	"strings"
)

// Invalid is a configuration that failed validation, one problem per line.
// A problem names the keys it is about in braces in its format ("{train.steps}
// %d must be positive"); Error shows them as they are, and Problems renames
// them for a configuration nested in a larger one (a recipe's distillation
// stage reports distill.train.steps).
type Invalid struct {
	Prefix   string // the message's package prefix, e.g. "train"
	problems []problem
}

// problem is a formatted message whose keys are marked by NUL bytes.
type problem struct {
	text string
	keys []string
}

var braced = regexp.MustCompile(`\{([A-Za-z0-9_.\[\]]+)\}`)

// Addf records a problem. Keys are written in braces in the format, an
// index after the braces ("{data.datasets}[%d].path"); the values are
// formatted as fmt.Sprintf does.
func (e *Invalid) Addf(format string, a ...any) {
	var keys []string
	for _, m := range braced.FindAllStringSubmatch(format, -1) {
		keys = append(keys, m[1])
	}
	text := fmt.Sprintf(braced.ReplaceAllString(format, "\x00"), a...)
	e.problems = append(e.problems, problem{text, keys})
}

// Err returns e when it holds a problem, else nil.
func (e *Invalid) Err() error {
	if len(e.problems) == 0 {
		return nil
	}
	return e
}

func (e *Invalid) Error() string {
	return e.Prefix + ": invalid configuration:\n  " + strings.Join(e.Problems(nil), "\n  ")
}

// Problems returns the problems with every key passed through rename (nil:
// keys as they are).
func (e *Invalid) Problems(rename func(key string) string) []string {
	out := make([]string, len(e.problems))
	for i, p := range e.problems {
		s := p.text
		for _, k := range p.keys {
			if rename != nil {
				k = rename(k)
			}
			s = strings.Replace(s, "\x00", k, 1)
		}
		out[i] = s
	}
	return out
}
