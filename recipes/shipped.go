package recipes

import (
	"embed"
	"sort"
	"strings"
)

// The recipe files shipped in this directory, for listing them.
//
//go:embed *.yaml
var shipped embed.FS

// ShippedRecipe is a recipe file that comes with minitron (in recipes/ of
// its source tree).
type ShippedRecipe struct {
	File    string // e.g. tiny.yaml
	Summary string // the first phrase of its opening comment
}

// Shipped lists the shipped recipes, sorted by file name.
func Shipped() []ShippedRecipe {
	entries, _ := shipped.ReadDir(".")
	var out []ShippedRecipe
	for _, e := range entries {
		b, err := shipped.ReadFile(e.Name())
		if err != nil {
			continue
		}
		out = append(out, ShippedRecipe{File: e.Name(), Summary: summary(string(b))})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].File < out[b].File })
	return out
}

// summary is the opening comment's first phrase: up to the first " (",
// ": ", "; " or ". ".
func summary(text string) string {
	var para []string
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "#") {
			break
		}
		l = strings.TrimSpace(strings.TrimPrefix(l, "#"))
		if l == "" {
			break
		}
		para = append(para, l)
	}
	s := strings.Join(para, " ")
	for _, sep := range []string{" (", ": ", "; ", ". "} {
		if i := strings.Index(s, sep); i > 0 {
			s = s[:i]
		}
	}
	return strings.TrimRight(s, ".:;,")
}
