package data

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/minitron/minitron/internal/ordered"
	"github.com/minitron/minitron/tokenizer"
)

// PrepareOptions configure Prepare.
type PrepareOptions struct {
	Inputs []string // files and directories
	// Include filters files found in directories by base name (globs).
	Include       []string
	Out           string
	Tokenizer     tokenizer.Tokenizer
	TokenizerPath string
	TextField     string // JSON lines field / Parquet column, default "text"
	SplitLines    bool   // each line of a text file is a document
	AddBOS        bool
	AddEOS        bool
	OnError       string // "fail" (default) or "skip"
	BatchTokens   int    // tokens per record batch, default 65536
	ShardTokens   int64  // tokens per shard, default 64M
	Workers       int    // default GOMAXPROCS
	// Progress receives input bytes read out of the total.
	Progress func(done, total int64)
}

func (o *PrepareOptions) defaults() error {
	if o.TextField == "" {
		o.TextField = "text"
	}
	if o.OnError == "" {
		o.OnError = "fail"
	}
	if o.OnError != "fail" && o.OnError != "skip" {
		return fmt.Errorf("data: --on-error %q: use fail or skip", o.OnError)
	}
	if o.BatchTokens == 0 {
		o.BatchTokens = 1 << 16
	}
	if o.ShardTokens == 0 {
		o.ShardTokens = 64 << 20
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Tokenizer == nil {
		return errors.New("data: no tokenizer")
	}
	if o.AddEOS && o.Tokenizer.EOS() < 0 {
		return errors.New("data: the tokenizer has no EOS token to separate documents; pass --eos=false or use a tokenizer with one")
	}
	if o.AddBOS && o.Tokenizer.BOS() < 0 {
		return errors.New("data: the tokenizer has no BOS token")
	}
	if o.Out == "" {
		return errors.New("data: no output directory")
	}
	return nil
}

func (o *PrepareOptions) options() Options {
	return Options{AddBOS: o.AddBOS, AddEOS: o.AddEOS, SplitLines: o.SplitLines, TextField: o.TextField, OnError: o.OnError}
}

// chunk is a run of items processed together, in input order.
type chunk struct {
	items []item
	// results
	tokens  []int32
	lengths []int // tokens per document, 0 for empty or skipped
	skipped []bool
	err     error
}

// Prepare tokenizes the inputs into a dataset directory. If the directory
// already holds a complete dataset of the same inputs (same checksums),
// tokenizer and options, it is kept and returned. Documents that are empty
// or only whitespace are skipped and counted (EmptyDocuments). A run that
// fails removes the directory when it made it.
func Prepare(ctx context.Context, opt PrepareOptions) (*Manifest, error) {
	if err := opt.defaults(); err != nil {
		return nil, err
	}
	files, err := expandInputs(opt.Inputs, opt.Include)
	if err != nil {
		return nil, err
	}
	_, statErr := os.Stat(opt.Out)
	made := errors.Is(statErr, os.ErrNotExist)
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	m, err := prepareFiles(ctx, opt, files)
	if err != nil && made {
		os.RemoveAll(opt.Out)
	}
	return m, err
}

func prepareFiles(ctx context.Context, opt PrepareOptions, files []inputFile) (*Manifest, error) {
	if m, err := ReadManifest(opt.Out); err == nil && m.sameSource(files, opt) {
		return m, nil
	}
	// Start clean: an older or interrupted run's files go.
	old, _ := filepath.Glob(filepath.Join(opt.Out, "shard-*.arrow"))
	tmp, _ := filepath.Glob(filepath.Join(opt.Out, ".shard-*.tmp"))
	for _, f := range append(append(old, tmp...), filepath.Join(opt.Out, ManifestFile)) {
		os.Remove(f)
	}
	var total int64
	for _, f := range files {
		total += f.size
	}
	m := &Manifest{Format: FormatVersion, Created: time.Now().UTC(), BatchTokens: opt.BatchTokens, Options: opt.options(),
		Tokenizer: Tokenizer{Path: opt.TokenizerPath, Hash: opt.Tokenizer.Hash(), VocabSize: opt.Tokenizer.VocabSize(), BOS: opt.Tokenizer.BOS(), EOS: opt.Tokenizer.EOS()}}
	for _, f := range files {
		m.Inputs = append(m.Inputs, Input{Path: f.path, Bytes: f.size})
	}
	// Inputs are read in order and grouped into chunks, chunks are
	// tokenized on all workers, and the tokens are written in input order.
	var done int64
	progress := func(n int64) {
		done += n
		if opt.Progress != nil {
			opt.Progress(done, total)
		}
	}
	read := func(send func(*chunk) error) error {
		cur, size := &chunk{}, 0
		flush := func() error {
			if len(cur.items) == 0 {
				return nil
			}
			err := send(cur)
			cur, size = &chunk{}, 0
			return err
		}
		for i, f := range files {
			sum, err := readInput(ctx, i, f, opt, func(it item) error {
				cur.items = append(cur.items, it)
				size += len(it.text)
				if len(cur.items) >= 512 || size >= 4<<20 {
					return flush()
				}
				return nil
			}, progress)
			if err != nil {
				return err
			}
			m.Inputs[i].SHA256 = sum
		}
		return flush()
	}
	tokenize := func(c *chunk) (*chunk, error) {
		process(c, files, opt)
		return c, c.err
	}
	w := newShardWriter(opt.Out, opt.BatchTokens, opt.ShardTokens)
	write := func(c *chunk) error {
		off := 0
		for i, it := range c.items {
			n := c.lengths[i]
			switch {
			case c.skipped[i]:
				m.SkippedRecords++
			case n == 0:
				m.EmptyDocuments++
			default:
				if err := w.add(c.tokens[off : off+n]); err != nil {
					return err
				}
				m.Inputs[it.input].Documents++
				m.Documents++
			}
			off += n
		}
		return nil
	}
	if err := ordered.Map(ctx, opt.Workers, read, tokenize, write); err != nil {
		w.abort()
		return nil, err
	}
	if err := w.close(); err != nil {
		w.abort()
		return nil, err
	}
	if w.tokens == 0 {
		return nil, fmt.Errorf("data: the inputs hold no text (%d empty or whitespace-only documents, %d skipped records)", m.EmptyDocuments, m.SkippedRecords)
	}
	m.Shards, m.Tokens = w.shards, w.tokens
	if err := writeManifest(opt.Out, m); err != nil {
		return nil, err
	}
	return m, nil
}

// process tokenizes a chunk's items.
func process(c *chunk, files []inputFile, opt PrepareOptions) {
	tok := opt.Tokenizer
	c.lengths = make([]int, len(c.items))
	c.skipped = make([]bool, len(c.items))
	for i, it := range c.items {
		text, err := itemText(it, opt.TextField)
		if err != nil || it.line == -1 {
			if it.line == -1 {
				err = fmt.Errorf("looks binary (it has NUL bytes)")
			}
			where := files[it.input].path
			if it.line > 0 {
				where = fmt.Sprintf("%s:%d", where, it.line)
			}
			if opt.OnError == "skip" || it.line == -1 {
				c.skipped[i] = true
				continue
			}
			c.err = fmt.Errorf("data: %s: %w (use --on-error skip to skip such records)", where, err)
			return
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		start := len(c.tokens)
		if opt.AddBOS {
			c.tokens = append(c.tokens, tok.BOS())
		}
		c.tokens = tok.AppendEncode(c.tokens, text)
		if opt.AddEOS {
			c.tokens = append(c.tokens, tok.EOS())
		}
		c.lengths[i] = len(c.tokens) - start
	}
}

// itemText extracts a document's text.
func itemText(it item, field string) (string, error) {
	if !it.json {
		return string(it.text), nil
	}
	if len(strings.TrimSpace(string(it.text))) == 0 {
		return "", nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(it.text, &obj); err != nil {
		return "", fmt.Errorf("invalid JSON: %w", err)
	}
	raw, ok := obj[field]
	if !ok {
		return "", fmt.Errorf("no field %q (choose one with --text-field)", field)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("field %q is %.40s, not a string", field, raw)
	}
	return s, nil
}

// sameSource reports whether a finished dataset came from these inputs and
// settings (checksums compared, so edited files are noticed).
func (m *Manifest) sameSource(files []inputFile, opt PrepareOptions) bool {
	if m.Tokenizer.Hash != opt.Tokenizer.Hash() || m.Options != opt.options() || m.BatchTokens != opt.BatchTokens || len(m.Inputs) != len(files) {
		return false
	}
	for i, f := range files {
		in := m.Inputs[i]
		if in.Path != f.path || in.Bytes != f.size {
			return false
		}
		sum, err := fileSHA256(f.path)
		if err != nil || sum != in.SHA256 {
			return false
		}
	}
	return true
}
