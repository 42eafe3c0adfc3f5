package eval

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// Row is one record of a dataset as the Hugging Face hub publishes it, its
// fields decoded as encoding/json decodes them (numbers as json.Number).
// A row read from Parquet is converted through JSON, so the two formats
// give identical rows.
type Row map[string]any

// Split is the rows of one split of a dataset, in file order.
type Split struct {
	Name  string   // test, validation, dev, train; "" for a single file
	Files []string // the files it was read from
	Rows  []Row
	keys  []string // canonical JSON of each row, for equality
}

// splitNames are the split names a file name may start with.
var splitNames = []string{"test", "validation", "dev", "train"}

// dataFile reports whether a file name is a data file this package reads.
func dataFile(name string) bool {
	n := strings.ToLower(name)
	for _, ext := range []string{".parquet", ".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson"} {
		if strings.HasSuffix(n, ext) {
			return true
		}
	}
	return false
}

// splitOf returns the split a file name tells (by its first letters), or "".
func splitOf(name string) string {
	n := strings.ToLower(name)
	for _, s := range splitNames {
		if strings.HasPrefix(n, s) {
			return s
		}
	}
	return ""
}

// Dataset is the data of a task: the files of a folder grouped into splits
// by their names (test*, validation*, dev*, train*), or one file.
type Dataset struct {
	Path   string
	single bool
	files  map[string][]string // split -> files, lexical order
	other  []string            // data files whose names tell no split
	loaded map[string]*Split
}

// OpenDataset lists the splits at path: a folder of Parquet or JSON lines
// files as downloaded from the hub (one configuration's folder, e.g.
// ai2_arc/ARC-Challenge or mmlu/all, whose files are named by split, or
// the converted layout's folder with one subfolder per split), or one
// file, which is then the only split and serves the split a task
// evaluates.
func OpenDataset(path string) (*Dataset, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	d := &Dataset{Path: path, files: map[string][]string{}, loaded: map[string]*Split{}}
	if !st.IsDir() {
		if !dataFile(path) {
			return nil, fmt.Errorf("eval: %s: not a data file (want .parquet, .jsonl or .json lines, optionally .gz)", path)
		}
		d.single = true
		d.files[""] = []string{path}
		return d, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	var subdirs []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		if e.IsDir() {
			// The hub's converted layout: CONFIG/SPLIT/0000.parquet.
			if sp := splitOf(name); sp != "" && sp == strings.ToLower(name) {
				inner, _ := os.ReadDir(filepath.Join(path, name))
				for _, f := range inner {
					if !f.IsDir() && dataFile(f.Name()) && !strings.HasPrefix(f.Name(), ".") {
						d.files[sp] = append(d.files[sp], filepath.Join(path, name, f.Name()))
					}
				}
				continue
			}
			subdirs = append(subdirs, name)
			continue
		}
		if !dataFile(name) {
			continue
		}
		if s := splitOf(name); s != "" {
			d.files[s] = append(d.files[s], filepath.Join(path, name))
		} else {
			d.other = append(d.other, name)
		}
	}
	if len(d.files) == 0 {
		msg := fmt.Sprintf("eval: %s holds no data files named test*, validation*, dev* or train* (.parquet or .jsonl)", path)
		if len(d.other) > 0 {
			msg += "; it has " + strings.Join(d.other, ", ") + ": rename them by split, or give one file"
		}
		if len(subdirs) > 0 {
			msg += "; point at one of its folders: " + strings.Join(subdirs, ", ")
		}
		return nil, fmt.Errorf("%s", msg)
	}
	for _, fs := range d.files {
		sort.Strings(fs)
	}
	return d, nil
}

// Single reports whether the dataset is one file.
func (d *Dataset) Single() bool { return d.single }

// Split reads a split (cached).
func (d *Dataset) Split(ctx context.Context, name string) (*Split, error) {
	key := name
	if d.single {
		key = ""
	}
	if s, ok := d.loaded[key]; ok {
		return s, nil
	}
	files := d.files[key]
	if len(files) == 0 {
		var have []string
		for s := range d.files {
			have = append(have, s)
		}
		sort.Strings(have)
		return nil, fmt.Errorf("eval: %s has no %s split (files named %s*; it has: %s)", d.Path, name, name, strings.Join(have, ", "))
	}
	s := &Split{Name: key, Files: files}
	for _, f := range files {
		rows, err := ReadRows(ctx, f)
		if err != nil {
			return nil, err
		}
		s.Rows = append(s.Rows, rows...)
	}
	if len(s.Rows) == 0 {
		return nil, fmt.Errorf("eval: %s: the %s split holds no rows", d.Path, name)
	}
	for _, r := range s.Rows {
		b, _ := json.Marshal(r) // map keys sorted: canonical
		s.keys = append(s.keys, string(b))
	}
	d.loaded[key] = s
	return s, nil
}

// ReadRows reads every row of a Parquet or JSON lines file (.gz too).
func ReadRows(ctx context.Context, path string) ([]Row, error) {
	if strings.HasSuffix(strings.ToLower(path), ".parquet") {
		return readParquetRows(ctx, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(strings.ToLower(path), ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("eval: %s: not a valid gzip file: %v", path, err)
		}
		defer zr.Close()
		r = zr
	}
	br := bufio.NewReaderSize(r, 1<<20)
	var rows []Row
	for line := 1; ; line++ {
		b, err := br.ReadBytes('\n')
		if t := bytes.TrimSpace(b); len(t) > 0 {
			row, perr := decodeRow(t)
			if perr != nil {
				return nil, fmt.Errorf("eval: %s:%d: %v (want one JSON object per line)", path, line, perr)
			}
			rows = append(rows, row)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("eval: reading %s: %w", path, err)
		}
	}
	return rows, nil
}

func decodeRow(b []byte) (Row, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var row Row
	if err := dec.Decode(&row); err != nil {
		return nil, err
	}
	if row == nil {
		return nil, fmt.Errorf("null is not a JSON object")
	}
	return row, nil
}

// readParquetRows reads a Parquet file's rows, every column converted
// through its JSON form.
func readParquetRows(ctx context.Context, path string) ([]Row, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	defer f.Close()
	pr, err := file.NewParquetReader(f)
	if err != nil {
		return nil, fmt.Errorf("eval: %s: not a valid Parquet file: %v", path, err)
	}
	defer pr.Close()
	fr, err := pqarrow.NewFileReader(pr, pqarrow.ArrowReadProperties{BatchSize: 4096}, memory.NewGoAllocator())
	if err != nil {
		return nil, fmt.Errorf("eval: %s: %v", path, err)
	}
	rr, err := fr.GetRecordReader(ctx, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("eval: %s: %v", path, err)
	}
	defer rr.Release()
	var rows []Row
	for rr.Next() {
		rec := rr.RecordBatch()
		sc := rec.Schema()
		for i := range int(rec.NumRows()) {
			m := make(map[string]any, rec.NumCols())
			for c := range int(rec.NumCols()) {
				m[sc.Field(c).Name] = rec.Column(c).GetOneForMarshal(i)
			}
			b, err := json.Marshal(m)
			if err != nil {
				return nil, fmt.Errorf("eval: %s: row %d: %v", path, len(rows)+1, err)
			}
			row, err := decodeRow(b)
			if err != nil {
				return nil, fmt.Errorf("eval: %s: row %d: %v", path, len(rows)+1, err)
			}
			rows = append(rows, row)
		}
	}
	if err := rr.Err(); err != nil && err != io.EOF {
		return nil, fmt.Errorf("eval: %s: %v", path, err)
	}
	return rows, nil
}

// Field accessors: each names the file, the row and the field in its error.

type rowErr struct {
	where string // file or folder and split
	row   int    // 0-based
}

func (e rowErr) errorf(field, format string, a ...any) error {
	return fmt.Errorf("eval: %s, row %d: field %q: %s", e.where, e.row+1, field, fmt.Sprintf(format, a...))
}

func (e rowErr) str(r Row, field string) (string, error) {
	v, ok := r[field]
	if !ok {
		return "", e.errorf(field, "missing (fields: %s)", fieldNames(r))
	}
	s, ok := v.(string)
	if !ok {
		return "", e.errorf(field, "is %T, want a string", v)
	}
	return s, nil
}

// strings reads several string fields at once.
func (e rowErr) strings(r Row, fields ...string) ([]string, error) {
	out := make([]string, len(fields))
	for i, f := range fields {
		v, err := e.str(r, f)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func (e rowErr) strs(r Row, field string) ([]string, error) {
	v, ok := r[field]
	if !ok {
		return nil, e.errorf(field, "missing (fields: %s)", fieldNames(r))
	}
	return e.asStrings(field, v)
}

func (e rowErr) asStrings(field string, v any) ([]string, error) {
	l, ok := v.([]any)
	if !ok {
		return nil, e.errorf(field, "is %T, want a list of strings", v)
	}
	out := make([]string, len(l))
	for i, x := range l {
		s, ok := x.(string)
		if !ok {
			return nil, e.errorf(field, "item %d is %T, want a string", i, x)
		}
		out[i] = s
	}
	return out, nil
}

func (e rowErr) integer(r Row, field string) (int, error) {
	v, ok := r[field]
	if !ok {
		return 0, e.errorf(field, "missing (fields: %s)", fieldNames(r))
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, e.errorf(field, "is %T, want an integer", v)
	}
	i, err := n.Int64()
	if err != nil {
		return 0, e.errorf(field, "%s is not an integer", n)
	}
	return int(i), nil
}

func fieldNames(r Row) string {
	var names []string
	for k := range r {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
