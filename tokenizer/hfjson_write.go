package tokenizer

import (
	"encoding/json"
	"fmt"
	"sort"
)

// TokenizerJSON renders a BPE SentencePiece model as a Hugging Face
// tokenizer.json (the Llama-2 layout: Prepend and Replace normalizers, byte
// fallback, control pieces as special added tokens), so fast-tokenizer users
// get the same ids. Merges are every split of a piece into two pieces,
// ranked by the merged piece's score.
func (sp *SentencePiece) TokenizerJSON() ([]byte, error) {
	if sp.model != modelBPE {
		return nil, fmt.Errorf("tokenizer: only BPE SentencePiece models convert to tokenizer.json")
	}
	if sp.norm.rules != nil || sp.norm.removeExtraWS {
		return nil, fmt.Errorf("tokenizer: the model normalizes text (charsmap or whitespace cleanup), which tokenizer.json's BPE layout cannot express")
	}
	vocab := make(map[string]int32, len(sp.pieces))
	for i, p := range sp.pieces {
		vocab[p.piece] = int32(i)
	}
	type merge struct {
		l, r  string
		score float32
		id    int32
	}
	var merges []merge
	for p, id := range sp.pieceID {
		for i := 1; i < len(p); i++ {
			l, okl := sp.pieceID[p[:i]]
			r, okr := sp.pieceID[p[i:]]
			if okl && okr && l >= 0 && r >= 0 {
				merges = append(merges, merge{p[:i], p[i:], sp.pieces[id].score, id})
			}
		}
	}
	sort.Slice(merges, func(i, j int) bool {
		a, b := merges[i], merges[j]
		if a.score != b.score {
			return a.score > b.score
		}
		if a.id != b.id {
			return a.id < b.id
		}
		return sp.pieceID[a.l] < sp.pieceID[b.l]
	})
	ml := make([][2]string, len(merges))
	for i, m := range merges {
		ml[i] = [2]string{m.l, m.r}
	}
	var added []map[string]any
	for i, p := range sp.pieces {
		if p.typ == typeControl || p.typ == typeUnknown || p.typ == typeUserDefined {
			added = append(added, map[string]any{"id": i, "content": p.piece, "single_word": false, "lstrip": false,
				"rstrip": false, "normalized": false, "special": p.typ != typeUserDefined})
		}
	}
	var normalizers []any
	if sp.norm.addDummyPrefix {
		normalizers = append(normalizers, map[string]any{"type": "Prepend", "prepend": spaceSymbol})
	}
	normalizers = append(normalizers, map[string]any{"type": "Replace", "pattern": map[string]string{"String": " "}, "content": spaceSymbol})
	decoders := []any{
		map[string]any{"type": "Replace", "pattern": map[string]string{"String": spaceSymbol}, "content": " "},
		map[string]any{"type": "ByteFallback"},
		map[string]any{"type": "Fuse"},
	}
	if sp.norm.addDummyPrefix {
		decoders = append(decoders, map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0})
	}
	doc := map[string]any{
		"version":        "1.0",
		"truncation":     nil,
		"padding":        nil,
		"added_tokens":   added,
		"normalizer":     map[string]any{"type": "Sequence", "normalizers": normalizers},
		"pre_tokenizer":  nil,
		"post_processor": nil,
		"decoder":        map[string]any{"type": "Sequence", "decoders": decoders},
		"model": map[string]any{
			"type": "BPE", "dropout": nil, "unk_token": sp.pieces[sp.unkID].piece,
			"continuing_subword_prefix": nil, "end_of_word_suffix": nil, "fuse_unk": true,
			"byte_fallback": sp.byteFallback, "ignore_merges": false, "vocab": vocab, "merges": ml,
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}
