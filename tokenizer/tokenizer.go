// Package tokenizer turns text into token ids and back, identically to the
// reference libraries: SentencePiece .model files (BPE and unigram) and
// Hugging Face tokenizer.json files of the kinds Llama- and Nemotron-family
// checkpoints ship.
package tokenizer

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"

	"github.com/minitron/minitron/diskio"
)

// Tokenizer encodes and decodes text.
type Tokenizer interface {
	// Encode returns the ids of text, without BOS or EOS.
	Encode(text string) []int32
	// AppendEncode appends the ids of text to dst.
	AppendEncode(dst []int32, text string) []int32
	// Decode returns the text of ids; special tokens are dropped.
	Decode(ids []int32) string
	VocabSize() int
	// BOS and EOS return the special ids, or -1 when there is none.
	BOS() int32
	EOS() int32
	// Piece returns the vocabulary entry of an id.
	Piece(id int32) string
	// Hash identifies the tokenizer's definition (for manifests).
	Hash() string
}

var _ Tokenizer = (*SentencePiece)(nil)

func hashBytes(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// EncodePrompt returns the ids a model is prompted with: BOS, when the
// tokenizer has one, then the ids of text (no EOS).
func EncodePrompt(t interface {
	Encode(text string) []int32
	BOS() int32
}, text string) []int32 {
	ids := t.Encode(text)
	if b := t.BOS(); b >= 0 {
		ids = append([]int32{b}, ids...)
	}
	return ids
}

// DirFiles are the files of a model directory, besides config.json and the
// weights, that say how to tokenize and generate: the tokenizer itself,
// its configuration and special tokens, and the generation defaults. They
// go along with a model that is pruned, distilled, converted or exported.
func DirFiles() []string {
	return []string{"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"}
}

// CopyDirFiles copies those of DirFiles that are in the folder src into
// the folder dst (each atomically) and returns their names.
func CopyDirFiles(src, dst string) ([]string, error) {
	var copied []string
	for _, n := range DirFiles() {
		if _, err := os.Stat(filepath.Join(src, n)); err != nil {
			continue
		}
		if err := diskio.CopyFile(filepath.Join(src, n), filepath.Join(dst, n)); err != nil {
			return copied, err
		}
		copied = append(copied, n)
	}
	return copied, nil
}
