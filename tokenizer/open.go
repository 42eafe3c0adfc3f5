package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Open loads a tokenizer from a SentencePiece .model file, a tokenizer.json
// file, or a model directory holding tokenizer.model or tokenizer.json. In a
// directory, BOS and EOS come from tokenizer_config.json (bos_token,
// eos_token) or config.json (bos_token_id, eos_token_id) when they set them.
func Open(path string) (Tokenizer, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if !st.IsDir() {
		return openFile(path)
	}
	var tok Tokenizer
	for _, name := range []string{"tokenizer.model", "tokenizer.json"} {
		p := filepath.Join(path, name)
		if _, err := os.Stat(p); err == nil {
			if tok, err = openFile(p); err != nil {
				return nil, err
			}
			break
		}
	}
	if tok == nil {
		return nil, fmt.Errorf("tokenizer: %s has no tokenizer.model or tokenizer.json; pass --tokenizer with the tokenizer file", path)
	}
	bos, eos, err := specialIDs(path, tok)
	if err != nil {
		return nil, err
	}
	if bos == tok.BOS() && eos == tok.EOS() {
		return tok, nil
	}
	return &special{Tokenizer: tok, bos: bos, eos: eos}, nil
}

func openFile(p string) (Tokenizer, error) {
	if strings.HasSuffix(p, ".json") {
		return LoadJSON(p)
	}
	return LoadSentencePiece(p)
}

// special overrides a tokenizer's BOS and EOS ids.
type special struct {
	Tokenizer
	bos, eos int32
}

func (s *special) BOS() int32 { return s.bos }
func (s *special) EOS() int32 { return s.eos }

// specialIDs reads BOS/EOS settings of a model directory.
func specialIDs(dir string, tok Tokenizer) (bos, eos int32, err error) {
	bos, eos = tok.BOS(), tok.EOS()
	if b, err := os.ReadFile(filepath.Join(dir, "config.json")); err == nil {
		var c struct {
			BOS any `json:"bos_token_id"`
			EOS any `json:"eos_token_id"`
		}
		if json.Unmarshal(b, &c) == nil {
			if v, ok := firstID(c.BOS); ok {
				bos = v
			}
			if v, ok := firstID(c.EOS); ok {
				eos = v
			}
		}
	}
	p := filepath.Join(dir, "tokenizer_config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return bos, eos, nil
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		return 0, 0, fmt.Errorf("tokenizer: %s: invalid JSON: %w", p, err)
	}
	lookup := func(key string, cur int32) (int32, error) {
		var s string
		switch v := c[key].(type) {
		case string:
			s = v
		case map[string]any:
			s, _ = v["content"].(string)
		default:
			return cur, nil
		}
		id, ok := pieceID(tok, s)
		if !ok {
			return 0, fmt.Errorf("tokenizer: %s: %s %q is not in the vocabulary", p, key, s)
		}
		return id, nil
	}
	if bos, err = lookup("bos_token", bos); err != nil {
		return 0, 0, err
	}
	if eos, err = lookup("eos_token", eos); err != nil {
		return 0, 0, err
	}
	return bos, eos, nil
}

func firstID(v any) (int32, bool) {
	switch x := v.(type) {
	case float64:
		return int32(x), true
	case []any:
		if len(x) > 0 {
			if f, ok := x[0].(float64); ok {
				return int32(f), true
			}
		}
	}
	return 0, false
}

// pieceID finds the id of a vocabulary entry by its text.
func pieceID(tok Tokenizer, s string) (int32, bool) {
	for id := range tok.VocabSize() {
		if tok.Piece(int32(id)) == s {
			return int32(id), true
		}
	}
	return -1, false
}
