package generate

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestStopTokens: config.json's end-of-sequence ids and those of
// generation_config.json, each once; a bad file is an error naming it.
func TestStopTokens(t *testing.T) {
	for _, c := range []struct {
		gen  string // generation_config.json; "" for none
		want []int32
		err  string
	}{
		{"", []int32{2}, ""},
		{`{"eos_token_id": 7}`, []int32{2, 7}, ""},
		{`{"eos_token_id": [2, 9, 7]}`, []int32{2, 9, 7}, ""},
		{`{"eos_token_id": null}`, []int32{2}, ""},
		{`{"eos_token_id": "x"}`, nil, "must be a number or a list of numbers"},
		{`{"eos_token_id": `, nil, "invalid JSON"},
	} {
		dir := t.TempDir()
		if c.gen != "" {
			os.WriteFile(filepath.Join(dir, "generation_config.json"), []byte(c.gen), 0o644)
		}
		got, err := StopTokens(dir, []int{2})
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "generation_config.json") {
				t.Errorf("%s: error %v, want %q", c.gen, err, c.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: %v %v, want %v", c.gen, got, err, c.want)
		}
	}
}
