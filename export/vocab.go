package export

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/minitron/minitron/checkpoints"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

// GGUF token types (llama.cpp's llama_token_type).
const (
	tokNormal      = 1
	tokControl     = 3
	tokUserDefined = 4
	tokUnused      = 5
)

// ggufVocab is a vocabulary as GGUF stores it.
type ggufVocab struct {
	model  string // "llama" (SentencePiece) or "gpt2" (byte-level BPE)
	pre    string // llama.cpp's name of the pre-tokenizer (gpt2 only)
	tokens []string
	scores []float32 // llama only
	types  []int32
	merges []string // gpt2 only
	unk    int32
	pad    int32
	bos    int32
	eos    int32
	addBOS bool
}

func (v *ggufVocab) kvs() []checkpoints.GGUFKV {
	kv := []checkpoints.GGUFKV{
		{Key: "tokenizer.ggml.model", Value: v.model},
	}
	if v.pre != "" {
		kv = append(kv, checkpoints.GGUFKV{Key: "tokenizer.ggml.pre", Value: v.pre})
	}
	kv = append(kv, checkpoints.GGUFKV{Key: "tokenizer.ggml.tokens", Value: v.tokens})
	if v.scores != nil {
		kv = append(kv, checkpoints.GGUFKV{Key: "tokenizer.ggml.scores", Value: v.scores})
	}
	kv = append(kv, checkpoints.GGUFKV{Key: "tokenizer.ggml.token_type", Value: v.types})
	if v.merges != nil {
		kv = append(kv, checkpoints.GGUFKV{Key: "tokenizer.ggml.merges", Value: v.merges})
	}
	for _, id := range []struct {
		key string
		v   int32
	}{{"bos_token_id", v.bos}, {"eos_token_id", v.eos}, {"unknown_token_id", v.unk}, {"padding_token_id", v.pad}} {
		if id.v >= 0 {
			kv = append(kv, checkpoints.GGUFKV{Key: "tokenizer.ggml." + id.key, Value: uint32(id.v)})
		}
	}
	return append(kv,
		checkpoints.GGUFKV{Key: "tokenizer.ggml.add_bos_token", Value: v.addBOS},
		checkpoints.GGUFKV{Key: "tokenizer.ggml.add_eos_token", Value: false})
}

// readVocab reads a model directory's tokenizer for GGUF: tokenizer.model
// (SentencePiece) or else a byte-level BPE tokenizer.json, padded to the
// model's vocabulary, with BOS and EOS as config.json, then
// tokenizer_config.json, then the tokenizer say, checked against it.
func readVocab(src string, cfg *model.Config) (*ggufVocab, error) {
	var v *ggufVocab
	var err error
	spPath, jsPath := filepath.Join(src, "tokenizer.model"), filepath.Join(src, "tokenizer.json")
	switch {
	case fileExists(spPath):
		v, err = sentencePieceVocab(spPath)
	case fileExists(jsPath):
		v, err = byteLevelVocab(jsPath)
	default:
		return nil, fmt.Errorf("export: GGUF export needs the model's tokenizer: %s has neither tokenizer.model nor tokenizer.json", src)
	}
	if err != nil {
		return nil, err
	}
	n := len(v.tokens)
	if n > cfg.VocabSize {
		return nil, fmt.Errorf("export: the tokenizer has %d tokens, the model's vocabulary %d", n, cfg.VocabSize)
	}
	for i := n; i < cfg.VocabSize; i++ { // padded embeddings beyond the tokenizer
		v.tokens, v.types = append(v.tokens, fmt.Sprintf("[PAD%d]", i)), append(v.types, tokUnused)
		if v.scores != nil {
			v.scores = append(v.scores, 0)
		}
	}
	tok, err := tokenizer.Open(src) // tokenizer_config.json's bos_token / eos_token
	if err != nil {
		return nil, err
	}
	v.bos, v.eos = tok.BOS(), tok.EOS()
	if cfg.BOS >= 0 {
		v.bos = int32(cfg.BOS)
	}
	if len(cfg.EOS) > 0 {
		v.eos = int32(cfg.EOS[0])
	}
	for _, c := range []struct {
		name string
		id   int32
	}{{"bos_token_id", v.bos}, {"eos_token_id", v.eos}} {
		if c.id >= int32(n) {
			return nil, fmt.Errorf("export: %s: %s %d is not in the tokenizer's vocabulary of %d tokens; correct %s (or the tokenizer)",
				filepath.Join(src, "config.json"), c.name, c.id, n, c.name)
		}
	}
	if b, err := os.ReadFile(filepath.Join(src, "tokenizer_config.json")); err == nil {
		var tc struct {
			AddBOS *bool `json:"add_bos_token"`
		}
		if json.Unmarshal(b, &tc) == nil && tc.AddBOS != nil {
			v.addBOS = *tc.AddBOS
		}
	}
	if v.addBOS && v.bos < 0 {
		v.addBOS = false
	}
	return v, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func sentencePieceVocab(path string) (*ggufVocab, error) {
	sp, err := tokenizer.LoadSentencePiece(path)
	if err != nil {
		return nil, err
	}
	v := &ggufVocab{model: "llama", unk: sp.Unknown(), pad: sp.Pad(), addBOS: true}
	for _, p := range sp.Pieces() {
		v.tokens, v.scores, v.types = append(v.tokens, p.Text), append(v.scores, p.Score), append(v.types, int32(p.Type))
	}
	return v, nil
}

// llama.cpp's names (tokenizer.ggml.pre) of the byte-level pre-tokenizers
// the tokenizer package implements, by their regular expression.
var ggufPre = map[string]string{
	`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`: "llama-bpe",
	`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`:      "qwen2",
}

// byteLevelVocab reads a byte-level BPE tokenizer.json (Llama 3, GPT-2,
// Qwen2) as llama.cpp's converter does: tokens by id, added tokens marked
// control (special) or user-defined, merges as "left right", the
// pre-tokenizer by llama.cpp's name, and BOS added when the post-processor
// puts a special token first.
func byteLevelVocab(path string) (*ggufVocab, error) {
	if _, err := tokenizer.LoadJSON(path); err != nil { // the encoding it describes is one we implement
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	var raw struct {
		AddedTokens []struct {
			ID      int32  `json:"id"`
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens"`
		PreTokenizer json.RawMessage `json:"pre_tokenizer"`
		Post         *struct {
			Type   string           `json:"type"`
			Single []map[string]any `json:"single"`
		} `json:"post_processor"`
		Model struct {
			Vocab  map[string]int32  `json:"vocab"`
			Merges []json.RawMessage `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("export: %s: %v", path, err)
	}
	pre, err := preTokenizerName(raw.PreTokenizer)
	if err != nil {
		return nil, fmt.Errorf("export: %s: %w", path, err)
	}
	v := &ggufVocab{model: "gpt2", pre: pre, unk: -1, pad: -1}
	size := int32(0)
	for _, id := range raw.Model.Vocab {
		size = max(size, id+1)
	}
	for _, a := range raw.AddedTokens {
		size = max(size, a.ID+1)
	}
	v.tokens, v.types = make([]string, size), make([]int32, size)
	for i := range v.tokens {
		v.tokens[i], v.types[i] = fmt.Sprintf("[PAD%d]", i), tokUnused
	}
	for t, id := range raw.Model.Vocab {
		v.tokens[id], v.types[id] = t, tokNormal
	}
	for _, a := range raw.AddedTokens {
		v.tokens[a.ID], v.types[a.ID] = a.Content, tokUserDefined
		if a.Special {
			v.types[a.ID] = tokControl
		}
	}
	for i, m := range raw.Model.Merges {
		var s string
		var pair []string
		switch {
		case json.Unmarshal(m, &s) == nil:
		case json.Unmarshal(m, &pair) == nil && len(pair) == 2:
			s = pair[0] + " " + pair[1]
		default:
			return nil, fmt.Errorf("export: %s: model.merges[%d] is neither \"left right\" nor [left, right]", path, i)
		}
		v.merges = append(v.merges, s)
	}
	if p := raw.Post; p != nil && p.Type == "TemplateProcessing" && len(p.Single) > 0 {
		_, v.addBOS = p.Single[0]["SpecialToken"]
	}
	return v, nil
}

// preTokenizerName finds llama.cpp's name for a byte-level pre-tokenizer.
func preTokenizerName(raw json.RawMessage) (string, error) {
	var top struct {
		Type          string            `json:"type"`
		PreTokenizers []json.RawMessage `json:"pretokenizers"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		return "", fmt.Errorf("pre_tokenizer: %v", err)
	}
	items := []json.RawMessage{raw}
	if top.Type == "Sequence" {
		items = top.PreTokenizers
	}
	name, byteLevel := "", false
	for _, it := range items {
		var c struct {
			Type    string `json:"type"`
			Pattern struct {
				Regex string `json:"Regex"`
			} `json:"pattern"`
			UseRegex *bool `json:"use_regex"`
		}
		json.Unmarshal(it, &c)
		switch c.Type {
		case "Split":
			n, ok := ggufPre[c.Pattern.Regex]
			if !ok {
				return "", fmt.Errorf("llama.cpp knows no name for the pre-tokenizer pattern %q", c.Pattern.Regex)
			}
			name = n
		case "ByteLevel":
			byteLevel = true
			if c.UseRegex == nil || *c.UseRegex {
				name = "gpt-2"
			}
		}
	}
	if !byteLevel {
		return "", errors.New("GGUF export of a tokenizer.json supports byte-level BPE (Llama 3, GPT-2, Qwen2); for a SentencePiece-style one put its tokenizer.model beside it")
	}
	if name == "" {
		return "", errors.New("a ByteLevel pre-tokenizer without a splitting pattern has no llama.cpp equivalent")
	}
	return name, nil
}
