package data

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/klauspost/compress/zstd"
)

// kind is how an input file is read.
type kind int

const (
	kindText kind = iota
	kindJSONL
	kindParquet
)

func kindOf(path string) kind {
	p := strings.ToLower(path)
	switch {
	case strings.HasSuffix(p, ".jsonl"), strings.HasSuffix(p, ".jsonl.gz"), strings.HasSuffix(p, ".jsonl.zst"),
		strings.HasSuffix(p, ".ndjson"), strings.HasSuffix(p, ".json.gz"), strings.HasSuffix(p, ".json.zst"):
		return kindJSONL
	case strings.HasSuffix(p, ".parquet"):
		return kindParquet
	}
	return kindText
}

// inputFile is one file to read.
type inputFile struct {
	path string
	size int64
	kind kind
}

// expandInputs lists the files of the inputs: files as given, directories
// walked in lexical order (hidden entries skipped), filtered by include
// globs matched against base names when given.
func expandInputs(paths []string, include []string) ([]inputFile, error) {
	var out []inputFile
	seen := map[string]bool{}
	match := func(name string) bool {
		if len(include) == 0 {
			return true
		}
		for _, g := range include {
			if ok, _ := filepath.Match(g, name); ok {
				return true
			}
		}
		return false
	}
	add := func(p string, size int64) {
		if !seen[p] {
			seen[p] = true
			out = append(out, inputFile{path: p, size: size, kind: kindOf(p)})
		}
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("data: input %w", err)
		}
		if !st.IsDir() {
			add(p, st.Size())
			continue
		}
		var files []inputFile
		err = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
			if err != nil {
				return fmt.Errorf("data: reading %s: %w", q, err)
			}
			if q != p && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.Type().IsRegular() && match(d.Name()) {
				info, err := d.Info()
				if err != nil {
					return err
				}
				files = append(files, inputFile{path: q, size: info.Size()})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
		for _, f := range files {
			add(f.path, f.size)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("data: the inputs %v hold no files to read", paths)
	}
	return out, nil
}

// item is one raw document (or JSON line) with where it came from.
type item struct {
	text  []byte
	input int // index into the input list
	line  int // 1-based line for JSON lines and split text; 0 for whole files
	json  bool
}

// hashingReader hashes and counts what passes through it.
type hashingReader struct {
	r    io.Reader
	h    io.Writer
	n    *int64
	done func(int64)
}

func (h hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	*h.n += int64(n)
	if h.done != nil {
		h.done(int64(n))
	}
	return n, err
}

// readInput emits the items of one input file, returning its checksum.
// progress receives bytes read from disk.
func readInput(ctx context.Context, idx int, in inputFile, opt PrepareOptions, emit func(item) error, progress func(int64)) (string, error) {
	f, err := os.Open(in.path)
	if err != nil {
		return "", fmt.Errorf("data: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	var n int64
	if in.kind == kindParquet {
		if _, err := io.Copy(h, f); err != nil {
			return "", fmt.Errorf("data: reading %s: %w", in.path, err)
		}
		err := readParquet(ctx, idx, in.path, f, opt, emit)
		if progress != nil {
			progress(in.size)
		}
		return hex.EncodeToString(h.Sum(nil)), err
	}
	var r io.Reader = hashingReader{r: f, h: h, n: &n, done: progress}
	lower := strings.ToLower(in.path)
	switch {
	case strings.HasSuffix(lower, ".gz"):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return "", fmt.Errorf("data: %s: not a valid gzip file: %w", in.path, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(lower, ".zst"):
		zr, err := zstd.NewReader(r)
		if err != nil {
			return "", fmt.Errorf("data: %s: %w", in.path, err)
		}
		defer zr.Close()
		r = zr
	}
	if in.kind == kindText && !opt.SplitLines {
		b, err := io.ReadAll(r)
		if err != nil {
			return "", fmt.Errorf("data: reading %s: %w", in.path, err)
		}
		if bytes.IndexByte(b[:min(len(b), 8192)], 0) >= 0 {
			// A NUL byte: a binary file, not text.
			return hex.EncodeToString(h.Sum(nil)), emit(item{input: idx, text: nil, line: -1})
		}
		return hex.EncodeToString(h.Sum(nil)), emit(item{input: idx, text: b})
	}
	sc := bufio.NewReaderSize(r, 1<<20)
	line := 0
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		b, err := sc.ReadBytes('\n')
		if len(b) > 0 {
			line++
			b = bytes.TrimSuffix(b, []byte("\n"))
			b = bytes.TrimSuffix(b, []byte("\r"))
			if e := emit(item{input: idx, text: b, line: line, json: in.kind == kindJSONL}); e != nil {
				return "", e
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("data: reading %s after line %d: %w", in.path, line, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// readParquet emits the text column of a Parquet file, row group by row
// group, so memory stays bounded by one record batch.
func readParquet(ctx context.Context, idx int, path string, f *os.File, opt PrepareOptions, emit func(item) error) error {
	pr, err := file.NewParquetReader(f)
	if err != nil {
		return fmt.Errorf("data: %s: not a valid Parquet file: %w", path, err)
	}
	defer pr.Close()
	fr, err := pqarrow.NewFileReader(pr, pqarrow.ArrowReadProperties{BatchSize: 1024}, memory.NewGoAllocator())
	if err != nil {
		return fmt.Errorf("data: %s: %w", path, err)
	}
	sc, err := fr.Schema()
	if err != nil {
		return fmt.Errorf("data: %s: %w", path, err)
	}
	col := -1
	var names []string
	for i, fl := range sc.Fields() {
		names = append(names, fl.Name)
		if fl.Name == opt.TextField {
			col = i
			if fl.Type.ID() != arrow.STRING && fl.Type.ID() != arrow.LARGE_STRING {
				return fmt.Errorf("data: %s: column %q is %s, want a string column", path, opt.TextField, fl.Type)
			}
		}
	}
	if col < 0 {
		return fmt.Errorf("data: %s: no column %q (columns: %s); choose one with --text-field", path, opt.TextField, strings.Join(names, ", "))
	}
	rr, err := fr.GetRecordReader(ctx, []int{col}, nil)
	if err != nil {
		return fmt.Errorf("data: %s: %w", path, err)
	}
	defer rr.Release()
	row := 0
	for rr.Next() {
		rec := rr.RecordBatch()
		type stringArray interface {
			Len() int
			IsNull(int) bool
			Value(int) string
		}
		arr, ok := rec.Column(0).(stringArray)
		if !ok {
			return fmt.Errorf("data: %s: column %q does not hold strings", path, opt.TextField)
		}
		for i := range arr.Len() {
			row++
			var text []byte
			if !arr.IsNull(i) {
				text = []byte(arr.Value(i))
			}
			if err := emit(item{input: idx, text: text, line: row}); err != nil {
				return err
			}
		}
	}
	if err := rr.Err(); err != nil && err != io.EOF {
		return fmt.Errorf("data: %s: %w", path, err)
	}
	return nil
}
