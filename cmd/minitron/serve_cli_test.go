package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestContextLimits: sample cuts --max-new-tokens to the model's context
// (max_position_embeddings, 128 here) with a note and refuses a prompt
// that fills it; serve refuses a --context beyond the model's unless
// --allow-long-context; a missing model directory is named.
func TestContextLimits(t *testing.T) {
	model := filepath.Join(fixtures, "nemotron-tiny")
	long := strings.Repeat("5,", 127) + "5"
	cases := []struct {
		name string
		args []string
		ok   bool
		want string
	}{
		{"sample cut to the context", []string{"sample", "--model", model, "--prompt-ids", "1,5,6", "--max-new-tokens", "5000", "--temperature", "0", "--ids", "--ignore-eos"},
			true, "--max-new-tokens 5000 cut to 125"},
		{"sample prompt filling the context", []string{"sample", "--model", model, "--prompt-ids", long, "--max-new-tokens", "1"},
			false, "the prompt has 128 tokens; the model's context is 128"},
		{"serve context beyond the model's", []string{"serve", "--model", model, "--context", "5000"},
			false, "--context 5000 is beyond the model's context of 128 tokens (max_position_embeddings); pass --allow-long-context"},
		{"serve missing model", []string{"serve", "--model", "/nonexistent/model"},
			false, "--model /nonexistent/model: no such model directory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, "", c.args...)
			if (r.code == 0) != c.ok || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("exit %d, stderr %q; want ok=%v and %q", r.code, r.stderr, c.ok, c.want)
			}
			if c.ok {
				if n := len(strings.Fields(r.stdout)); n != 128 {
					t.Fatalf("%d tokens, want the context's 128", n)
				}
			}
		})
	}
	for _, c := range []struct {
		asked, model int
		allow        bool
		want         int
	}{{0, 1024, false, 1024}, {0, 131072, false, 2048}, {512, 1024, false, 512}, {5000, 1024, true, 5000}} {
		if got, err := contextLength(c.asked, c.model, c.allow); err != nil || got != c.want {
			t.Errorf("contextLength(%d, %d, %v) = %d, %v; want %d", c.asked, c.model, c.allow, got, err, c.want)
		}
	}
}
