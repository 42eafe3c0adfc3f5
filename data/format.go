// Package data turns corpora into tokenized Arrow IPC shards and reads them
// back as shuffled, packed, blended training sequences with a cursor that
// resumes exactly.
//
// A prepared dataset is a directory with manifest.json and shard files
// shard-00000.arrow, .... Each shard is an Arrow IPC file (zstd-compressed)
// whose record batches each hold one row: "tokens", a list of exactly
// BatchTokens ids of the token stream (the last batch of the dataset may be
// shorter), and "doc_starts", the offsets within the batch where documents
// begin. Documents are concatenated in input order, each ended by EOS (and
// started by BOS when asked), so batch i of the dataset covers stream tokens
// [i·BatchTokens, (i+1)·BatchTokens) and any token is found by arithmetic.
package data

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/minitron/minitron/diskio"
)

// ManifestFile is the name of a dataset's manifest; it is written last, so
// a directory without it is not a complete dataset.
const ManifestFile = "manifest.json"

// FormatVersion identifies the shard layout.
const FormatVersion = 1

var schema = arrow.NewSchema([]arrow.Field{
	{Name: "tokens", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)},
	{Name: "doc_starts", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)},
}, nil)

// Manifest describes a prepared dataset.
type Manifest struct {
	Format      int       `json:"format"`
	Created     time.Time `json:"created"`
	Tokenizer   Tokenizer `json:"tokenizer"`
	BatchTokens int       `json:"batch_tokens"`
	Documents   int64     `json:"documents"`
	Tokens      int64     `json:"tokens"`
	// Skipped counts empty documents and, with --on-error skip, bad records.
	EmptyDocuments int64   `json:"empty_documents"`
	SkippedRecords int64   `json:"skipped_records"`
	Inputs         []Input `json:"inputs"`
	Shards         []Shard `json:"shards"`
	Options        Options `json:"options"`
}

// Tokenizer records what made the ids.
type Tokenizer struct {
	Path      string `json:"path"`
	Hash      string `json:"hash"`
	VocabSize int    `json:"vocab_size"`
	BOS       int32  `json:"bos"`
	EOS       int32  `json:"eos"`
}

// Input is one input file and its checksum.
type Input struct {
	Path      string `json:"path"`
	Bytes     int64  `json:"bytes"`
	SHA256    string `json:"sha256"`
	Documents int64  `json:"documents"`
}

// Shard is one shard file.
type Shard struct {
	File      string `json:"file"`
	Tokens    int64  `json:"tokens"`
	Documents int64  `json:"documents"` // documents starting in this shard
	Batches   int    `json:"batches"`
	SHA256    string `json:"sha256"`
	Bytes     int64  `json:"bytes"`
}

// Options are the settings that shaped the token stream.
type Options struct {
	AddBOS     bool   `json:"add_bos"`
	AddEOS     bool   `json:"add_eos"`
	SplitLines bool   `json:"split_lines"`
	TextField  string `json:"text_field"`
	OnError    string `json:"on_error"`
}

// ReadManifest loads and checks a dataset's manifest.
func ReadManifest(dir string) (*Manifest, error) {
	p := filepath.Join(dir, ManifestFile)
	b, err := os.ReadFile(p)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("data: %s is not a prepared dataset (no %s; was `minitron data prepare` interrupted?)", dir, ManifestFile)
		}
		return nil, fmt.Errorf("data: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("data: %s: invalid JSON: %w", p, err)
	}
	if m.Format != FormatVersion {
		return nil, fmt.Errorf("data: %s: format %d, this build reads format %d; prepare the dataset again", p, m.Format, FormatVersion)
	}
	if m.BatchTokens <= 0 {
		return nil, fmt.Errorf("data: %s: batch_tokens must be positive", p)
	}
	var sum int64
	for i, s := range m.Shards {
		if s.Tokens <= 0 || (i < len(m.Shards)-1 && s.Tokens%int64(m.BatchTokens) != 0) {
			return nil, fmt.Errorf("data: %s: shard %s has %d tokens, not a whole number of %d-token batches", p, s.File, s.Tokens, m.BatchTokens)
		}
		sum += s.Tokens
	}
	if sum != m.Tokens {
		return nil, fmt.Errorf("data: %s: shards hold %d tokens, the manifest says %d", p, sum, m.Tokens)
	}
	return &m, nil
}

func writeManifest(dir string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return diskio.WriteFileAtomic(filepath.Join(dir, ManifestFile), append(b, '\n'))
}
