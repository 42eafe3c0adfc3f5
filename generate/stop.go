package generate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// StopTokens are the end-of-sequence ids of the model in dir: eos (its
// config.json's eos_token_id) and generation_config.json's eos_token_id
// (end-of-turn tokens of chat models are often only in the latter).
func StopTokens(dir string, eos []int) ([]int32, error) {
	var out []int32
	add := func(id int) {
		if !slices.Contains(out, int32(id)) {
			out = append(out, int32(id))
		}
	}
	for _, e := range eos {
		add(e)
	}
	p := filepath.Join(dir, "generation_config.json")
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	var g struct {
		EOS json.RawMessage `json:"eos_token_id"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, fmt.Errorf("generate: %s: invalid JSON: %w", p, err)
	}
	var one int
	var list []int
	switch {
	case len(g.EOS) == 0 || string(g.EOS) == "null":
	case json.Unmarshal(g.EOS, &one) == nil:
		add(one)
	case json.Unmarshal(g.EOS, &list) == nil:
		for _, e := range list {
			add(e)
		}
	default:
		return nil, fmt.Errorf("generate: %s: eos_token_id must be a number or a list of numbers", p)
	}
	return out, nil
}
