package data

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/klauspost/compress/zstd"

	"github.com/minitron/minitron/internal/fixture"
	"github.com/minitron/minitron/tokenizer"
)

const tokModel = "../testdata/tokenizer/spm-nemotron-style.model"

func tok(t testing.TB) tokenizer.Tokenizer {
	t.Helper()
	tk, err := tokenizer.LoadSentencePiece(tokModel)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func write(t *testing.T, path string, b []byte) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func jsonLines(texts ...string) []byte {
	var b bytes.Buffer
	for _, s := range texts {
		j, _ := json.Marshal(map[string]any{"text": s, "id": 7})
		b.Write(append(j, '\n'))
	}
	return b.Bytes()
}

func writeParquet(t *testing.T, path string, texts []string) {
	t.Helper()
	mem := memory.NewGoAllocator()
	sc := arrow.NewSchema([]arrow.Field{{Name: "id", Type: arrow.PrimitiveTypes.Int64}, {Name: "content", Type: arrow.BinaryTypes.String, Nullable: true}}, nil)
	b := array.NewRecordBuilder(mem, sc)
	defer b.Release()
	for i, s := range texts {
		b.Field(0).(*array.Int64Builder).Append(int64(i))
		b.Field(1).(*array.StringBuilder).Append(s)
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tbl := array.NewTableFromRecords(sc, []arrow.RecordBatch{rec})
	defer tbl.Release()
	if err := pqarrow.WriteTable(tbl, f, 2, nil, pqarrow.DefaultWriterProps()); err != nil {
		t.Fatal(err)
	}
}

// corpus writes inputs of every kind and returns the documents in the order
// Prepare must read them.
func corpus(t *testing.T, dir string) []string {
	var docs []string
	texts := []string{"package main\n\nfunc main() {}\n", "// a comment\nvar x = 1\n", "type T struct{ A, B int }\n"}
	for i, s := range texts {
		write(t, filepath.Join(dir, "src", fmt.Sprintf("f%d.go", i)), []byte(s))
		docs = append(docs, s)
	}
	write(t, filepath.Join(dir, "src", ".hidden.go"), []byte("hidden"))
	write(t, filepath.Join(dir, "src", "notes.txt"), []byte("not matched by --include"))
	j := []string{"first json doc", "second \u00fcnicode doc", "third"}
	write(t, filepath.Join(dir, "a.jsonl"), jsonLines(j...))
	docs = append(docs, j...)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(jsonLines("gzip one", "gzip two"))
	zw.Close()
	write(t, filepath.Join(dir, "b.jsonl.gz"), gz.Bytes())
	docs = append(docs, "gzip one", "gzip two")
	enc, _ := zstd.NewWriter(nil)
	write(t, filepath.Join(dir, "c.jsonl.zst"), enc.EncodeAll(jsonLines("zstd one", "zstd two"), nil))
	docs = append(docs, "zstd one", "zstd two")
	p := []string{"parquet row zero", "parquet row one", "parquet row two"}
	writeParquet(t, filepath.Join(dir, "d.parquet"), p)
	docs = append(docs, p...)
	return docs
}

func prepare(t *testing.T, dir, out string, opt PrepareOptions) *Manifest {
	t.Helper()
	opt.Out = out
	if opt.Tokenizer == nil {
		opt.Tokenizer = tok(t)
	}
	opt.AddEOS = true
	m, err := Prepare(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPrepareAllFormats(t *testing.T) {
	dir := t.TempDir()
	docs := corpus(t, dir)
	tk := tok(t)
	in := []string{filepath.Join(dir, "src"), filepath.Join(dir, "a.jsonl"), filepath.Join(dir, "b.jsonl.gz"), filepath.Join(dir, "c.jsonl.zst")}
	// The Parquet file's text is in column "content"; give it separately.
	out := t.TempDir()
	m := prepare(t, dir, out, PrepareOptions{Inputs: in, Include: []string{"*.go", "*.jsonl*"}, BatchTokens: 7, ShardTokens: 20})
	out2 := t.TempDir()
	m2 := prepare(t, dir, out2, PrepareOptions{Inputs: []string{filepath.Join(dir, "d.parquet")}, TextField: "content", BatchTokens: 5, ShardTokens: 10})
	check := func(out string, m *Manifest, docs []string) {
		var want []int32
		for _, d := range docs {
			want = append(append(want, tk.Encode(d)...), tk.EOS())
		}
		if m.Documents != int64(len(docs)) || m.Tokens != int64(len(want)) {
			t.Fatalf("%d documents, %d tokens; want %d, %d", m.Documents, m.Tokens, len(docs), len(want))
		}
		if len(m.Shards) < 2 {
			t.Fatalf("%d shards: the test wants several", len(m.Shards))
		}
		ds, err := Open(out)
		if err != nil {
			t.Fatal(err)
		}
		defer ds.Close()
		if err := ds.Verify(); err != nil {
			t.Fatal(err)
		}
		got, err := ds.Read(nil, 0, m.Tokens)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("stream %v\nwant   %v (%v)", got, want, err)
		}
		var back []string
		ds.Documents(func(doc []int32) bool {
			back = append(back, tk.Decode(doc))
			return true
		})
		if !slices.Equal(back, docs) {
			t.Fatalf("documents %q\nwant %q", back, docs)
		}
		// Reads across batch and shard boundaries.
		for off := int64(0); off < m.Tokens; off += 3 {
			n := min(int64(11), m.Tokens-off)
			part, err := ds.Read(nil, off, n)
			if err != nil || !slices.Equal(part, want[off:off+n]) {
				t.Fatalf("read [%d,%d): %v %v", off, off+n, part, err)
			}
		}
	}
	check(out, m, docs[:len(docs)-3])
	check(out2, m2, docs[len(docs)-3:])
	for _, in := range m.Inputs {
		if len(in.SHA256) != 64 || in.Documents == 0 {
			t.Fatalf("input %+v", in)
		}
	}
	// A second run with the same inputs keeps the dataset.
	again := prepare(t, dir, out, PrepareOptions{Inputs: in, Include: []string{"*.go", "*.jsonl*"}, BatchTokens: 7, ShardTokens: 20})
	if !again.Created.Equal(m.Created) {
		t.Fatal("an unchanged dataset was prepared again")
	}
	// An edited input is noticed.
	write(t, filepath.Join(dir, "src", "f0.go"), []byte("package changed\n"))
	again = prepare(t, dir, out, PrepareOptions{Inputs: in, Include: []string{"*.go", "*.jsonl*"}, BatchTokens: 7, ShardTokens: 20})
	if again.Created.Equal(m.Created) {
		t.Fatal("an edited input did not trigger preparing again")
	}
}

func TestPrepareErrors(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "bad.jsonl"), []byte("{\"text\": \"ok\"}\n{\"text\": 3}\n\n{\"text\": \"\"}\n{broken\n{\"text\": \"fine\"}\n"))
	_, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{filepath.Join(dir, "bad.jsonl")}, Out: t.TempDir(), Tokenizer: tok(t), AddEOS: true})
	if err == nil || !strings.Contains(err.Error(), "bad.jsonl:2") || !strings.Contains(err.Error(), "not a string") {
		t.Fatalf("error %v: want the file, line 2 and the reason", err)
	}
	out := t.TempDir()
	m, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{filepath.Join(dir, "bad.jsonl")}, Out: out, Tokenizer: tok(t), AddEOS: true, OnError: "skip"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Documents != 2 || m.SkippedRecords != 2 || m.EmptyDocuments != 2 {
		t.Fatalf("documents %d, skipped %d, empty %d; want 2, 2, 2", m.Documents, m.SkippedRecords, m.EmptyDocuments)
	}
	if _, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{filepath.Join(dir, "missing.txt")}, Out: t.TempDir(), Tokenizer: tok(t)}); err == nil || !strings.Contains(err.Error(), "missing.txt") {
		t.Fatalf("missing input: %v", err)
	}
	write(t, filepath.Join(dir, "text.parquet"), []byte("not parquet"))
	if _, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{filepath.Join(dir, "text.parquet")}, Out: t.TempDir(), Tokenizer: tok(t)}); err == nil || !strings.Contains(err.Error(), "text.parquet") {
		t.Fatalf("bad parquet: %v", err)
	}
	// A failed run leaves no directory it made behind.
	fresh := filepath.Join(t.TempDir(), "new", "ds")
	if _, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{filepath.Join(dir, "text.parquet")}, Out: fresh, Tokenizer: tok(t)}); err == nil {
		t.Fatal("bad parquet accepted")
	}
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Fatalf("a failed run left %s: %v", fresh, err)
	}
}

// TestPrepareWhitespace: documents of only spaces, tabs and newlines are
// skipped and counted with the empty ones.
func TestPrepareWhitespace(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "w.jsonl"), []byte("{\"text\": \"a\"}\n{\"text\": \" \\t\\n \"}\n{\"text\": \"\"}\n{\"text\": \"\\r\\n\"}\n{\"text\": \" b \"}\n"))
	m, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{filepath.Join(dir, "w.jsonl")}, Out: filepath.Join(t.TempDir(), "ds"), Tokenizer: tok(t), AddEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if m.Documents != 2 || m.EmptyDocuments != 3 {
		t.Fatalf("documents %d, empty %d; want 2 and 3", m.Documents, m.EmptyDocuments)
	}
	empty := filepath.Join(t.TempDir(), "ds")
	write(t, filepath.Join(dir, "blank.txt"), []byte(" \n\t\n"))
	if _, err := Prepare(context.Background(), PrepareOptions{Inputs: []string{filepath.Join(dir, "blank.txt")}, Out: empty, Tokenizer: tok(t)}); err == nil || !strings.Contains(err.Error(), "1 empty or whitespace-only") {
		t.Fatalf("whitespace-only input: %v", err)
	}
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Fatalf("a failed run left %s", empty)
	}
}

// TestInterruptedPrepare: a killed run leaves temporary and orphan shard
// files but no manifest; readers refuse the directory, and a rerun cleans up.
func TestInterruptedPrepare(t *testing.T) {
	dir := t.TempDir()
	corpus(t, dir)
	out := t.TempDir()
	write(t, filepath.Join(out, ".shard-00003.arrow.tmp"), []byte("half a shard"))
	write(t, filepath.Join(out, "shard-00007.arrow"), []byte("orphan"))
	if _, err := Open(out); err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("open of an unfinished dataset: %v", err)
	}
	prepare(t, dir, out, PrepareOptions{Inputs: []string{filepath.Join(dir, "a.jsonl")}})
	for _, f := range []string{".shard-00003.arrow.tmp", "shard-00007.arrow"} {
		if _, err := os.Stat(filepath.Join(out, f)); err == nil {
			t.Fatalf("%s survived", f)
		}
	}
	// Cancelled mid-way: nothing a reader would accept.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out2 := t.TempDir()
	if _, err := Prepare(ctx, PrepareOptions{Inputs: []string{dir}, Out: out2, Tokenizer: tok(t), AddEOS: true}); err == nil {
		t.Fatal("cancelled run succeeded")
	}
	if _, err := Open(out2); err == nil {
		t.Fatal("a cancelled run left a readable dataset")
	}
}

// syntheticDataset prepares a dataset whose stream is known: documents of
// token text "w<i>" from the tokenizer, tiny batches and shards.
func syntheticDataset(t *testing.T, docs int, prefix string) (*Dataset, []int32) {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	for i := range docs {
		fmt.Fprintf(&b, "%s %d func %d\n", prefix, i, i*i)
	}
	write(t, filepath.Join(dir, "in.txt"), []byte(b.String()))
	out := t.TempDir()
	prepare(t, dir, out, PrepareOptions{Inputs: []string{filepath.Join(dir, "in.txt")}, SplitLines: true, BatchTokens: 13, ShardTokens: 50})
	ds, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	all, err := ds.Read(nil, 0, ds.Tokens())
	if err != nil {
		t.Fatal(err)
	}
	return ds, all
}

// TestSplitSpread: the validation split is the requested fraction of whole
// blocks, drawn from all over the corpus rather than from one end.
func TestSplitSpread(t *testing.T) {
	const T, blocks = 4, 200
	ds := &Dataset{Dir: "spread", Manifest: &Manifest{Tokens: blocks*splitBlock*T + 1}}
	train, val, err := ds.Split(T, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	if val.Count != 20*splitBlock || train.Count != 180*splitBlock {
		t.Fatalf("split %d + %d sequences, want %d + %d", train.Count, val.Count, 180*splitBlock, 20*splitBlock)
	}
	// Count the validation blocks in each fifth of the corpus: a draw
	// from all over it puts some in every fifth; a contiguous range, or
	// the corpus's end, would leave four fifths empty.
	var fifths [5]int
	for i := int64(0); i < val.Count; i += splitBlock {
		b := val.Index(i) / splitBlock
		if val.Index(i)%splitBlock != 0 {
			t.Fatalf("validation sequence %d starts inside a block", i)
		}
		fifths[b*5/blocks]++
	}
	for f, c := range fifths {
		if c == 0 {
			t.Errorf("no validation block in fifth %d of the corpus: %v", f, fifths)
		}
	}
}

func TestPermutation(t *testing.T) {
	for _, n := range []uint64{1, 2, 3, 7, 64, 100, 1000, 4097} {
		p := newPermutation(n, 42, 1)
		seen := make([]bool, n)
		for i := range n {
			x := p.at(i)
			if x >= n || seen[x] {
				t.Fatalf("n=%d: %d -> %d is not a bijection", n, i, x)
			}
			seen[x] = true
		}
	}
	a, b := newPermutation(1000, 1, 0), newPermutation(1000, 2, 0)
	same := 0
	for i := range uint64(1000) {
		if a.at(i) == b.at(i) {
			same++
		}
	}
	if same > 20 {
		t.Fatalf("different seeds agree on %d of 1000 positions", same)
	}
}

func TestLoaderPackingSplitAndResume(t *testing.T) {
	ds, all := syntheticDataset(t, 400, "alpha")
	const T = 5
	train, val, err := ds.Split(T, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	n := ds.Sequences(T)
	if train.Count+val.Count != n || val.Count < splitBlock {
		t.Fatalf("split %d + %d of %d", train.Count, val.Count, n)
	}
	// Every sequence is in exactly one split, and packing is the stream
	// cut every T tokens: sequence g is stream[g*T : g*T+T+1], no padding.
	seen := make([]int, n)
	for _, sp := range []Split{train, val} {
		for i := range sp.Count {
			g := sp.Index(i)
			seen[g]++
			s, err := sp.Read(nil, i)
			if err != nil || !slices.Equal(s, all[g*T:g*T+T+1]) {
				t.Fatalf("sequence %d: %v %v", g, s, err)
			}
		}
	}
	for g, c := range seen {
		if c != 1 {
			t.Fatalf("sequence %d is in %d splits", g, c)
		}
	}
	l, _ := NewLoader([]Source{{Name: "a", Split: train, Weight: 1}}, 5, true)
	// Three epochs: every epoch is a permutation of the split, and epochs differ.
	epochs := make([][]int64, 3)
	var seqs [][]int32
	var cursors []Cursor
	for e := range 3 {
		for range train.Count {
			cursors = append(cursors, l.Cursor())
			s, ref, err := l.Next(nil)
			if err != nil {
				t.Fatal(err)
			}
			if ref.Epoch != int64(e) {
				t.Fatalf("epoch %d, want %d", ref.Epoch, e)
			}
			epochs[e] = append(epochs[e], ref.Index)
			seqs = append(seqs, s)
		}
		sorted := slices.Sorted(slices.Values(epochs[e]))
		for i, x := range sorted {
			if x != int64(i) {
				t.Fatalf("epoch %d is not a permutation: %v", e, sorted)
			}
		}
	}
	if slices.Equal(epochs[0], epochs[1]) {
		t.Fatal("two epochs in the same order")
	}
	// Resume from every cursor (these cross batch, shard and epoch
	// boundaries): the rest of the stream is identical.
	var starts []int
	for k := 0; k < len(cursors); k += len(cursors)/20 + 1 {
		starts = append(starts, k)
	}
	for e := 1; e < 3; e++ { // around the epoch boundaries
		starts = append(starts, e*int(train.Count)-1, e*int(train.Count), e*int(train.Count)+1)
	}
	for _, k := range starts {
		r, _ := NewLoader([]Source{{Name: "a", Split: train, Weight: 1}}, 5, true)
		// Round-trip the cursor through JSON, as a checkpoint stores it.
		b, _ := json.Marshal(cursors[k])
		var c Cursor
		json.Unmarshal(b, &c)
		if err := r.SetCursor(c); err != nil {
			t.Fatal(err)
		}
		for j := k; j < len(seqs); j++ {
			s, _, err := r.Next(nil)
			if err != nil || !slices.Equal(s, seqs[j]) {
				t.Fatalf("resumed at %d: draw %d differs", k, j)
			}
		}
	}
}

func TestBlend(t *testing.T) {
	a, _ := syntheticDataset(t, 160, "code")
	b, _ := syntheticDataset(t, 80, "text")
	ta, _, _ := a.Split(8, 0)
	tb, _, _ := b.Split(8, 0)
	l, err := NewLoader([]Source{{"code", ta, 0.7}, {"text", tb, 0.3}}, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	count := [2]int{}
	for i := 1; i <= 1000; i++ {
		_, ref, err := l.Next(nil)
		if err != nil {
			t.Fatal(err)
		}
		count[ref.Source]++
		// The blend tracks the weights closely at every point.
		if d := math.Abs(float64(count[0]) - 0.7*float64(i)); d > 1 {
			t.Fatalf("after %d draws %d from code (want %.1f)", i, count[0], 0.7*float64(i))
		}
	}
	if _, err := NewLoader([]Source{{"x", ta, 0}}, 1, true); err == nil {
		t.Fatal("zero weight accepted")
	}
	// Skipping sequences, as the ranks of a data-parallel run skip each
	// other's, lands where drawing them does, blend and epochs included.
	ref, _ := NewLoader([]Source{{"code", ta, 0.7}, {"text", tb, 0.3}}, 1, true)
	skip, _ := NewLoader([]Source{{"code", ta, 0.7}, {"text", tb, 0.3}}, 1, true)
	for i, n := range []int{3, 1, 17, 250, 2} {
		want, err := ref.Batch(n)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			skip.Skip(n)
			if !reflect.DeepEqual(skip.Cursor(), ref.Cursor()) {
				t.Fatalf("after skipping: cursor %+v, drawing gives %+v", skip.Cursor(), ref.Cursor())
			}
			continue
		}
		got, err := skip.Batch(n)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("draw %d after skips differs", i)
		}
	}
}

func TestCalibration(t *testing.T) {
	ds, all := syntheticDataset(t, 60, "calib")
	c1, err := Calibration(ds, 5, 6, 9)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := Calibration(ds, 5, 6, 9)
	c3, _ := Calibration(ds, 5, 6, 10)
	if !slices.Equal(c1.Indices, c2.Indices) || !slices.Equal(c1.IDs, c2.IDs) || slices.Equal(c1.Indices, c3.Indices) {
		t.Fatal("calibration draw is not reproducible from its seed")
	}
	for i, idx := range c1.Indices {
		if !slices.Equal(c1.IDs[i*6:(i+1)*6], all[idx*6:idx*6+6]) {
			t.Fatalf("sample %d is not sequence %d", i, idx)
		}
	}
	// The metadata records the draw: the same indices, seed and dataset,
	// and the tokenizer the dataset was prepared with.
	meta := c1.Meta()
	var idx []int64
	if err := json.Unmarshal([]byte(meta["calibration_indices"]), &idx); err != nil || !slices.Equal(idx, c1.Indices) {
		t.Fatalf("calibration_indices %q (%v), drew %v", meta["calibration_indices"], err, c1.Indices)
	}
	if meta["calibration_seed"] != "9" || meta["calibration_source"] != ds.Dir || meta["calibration_dataset_tokenizer"] != ds.Manifest.Tokenizer.Hash || ds.Manifest.Tokenizer.Hash == "" {
		t.Fatalf("calibration metadata %v (dataset %s, tokenizer %q)", meta, ds.Dir, ds.Manifest.Tokenizer.Hash)
	}
	if _, err := Calibration(ds, 1<<20, 6, 1); err == nil {
		t.Fatal("over-sized draw accepted")
	}
}

// TestCalibrationFrom: a draw from the training split never holds a
// validation sequence, and sequences are cut from the split's own.
func TestCalibrationFrom(t *testing.T) {
	ds, all := syntheticDataset(t, 60, "calib")
	const T = 2
	train, val, err := ds.Split(T, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	isVal := map[int64]bool{}
	for i := range val.Count {
		isVal[val.Index(i)] = true
	}
	if len(isVal) == 0 {
		t.Fatal("no validation sequences: the test wants some")
	}
	c, err := CalibrationFrom(train, int(train.Count), 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for i, idx := range c.Indices {
		if isVal[idx] || seen[idx] {
			t.Fatalf("sample %d is sequence %d: validation %v, drawn twice %v", i, idx, isVal[idx], seen[idx])
		}
		seen[idx] = true
		if c.IDs[i] != all[idx*T] {
			t.Fatalf("sample %d is not the start of sequence %d", i, idx)
		}
	}
	if c2, _ := CalibrationFrom(train, 5, 1, 3); !slices.Equal(c2.Indices, c.Indices[:5]) {
		t.Fatal("the draw is not reproducible from its seed")
	}
	if _, err := CalibrationFrom(train, 2, T+1, 3); err == nil {
		t.Fatal("calibration sequences longer than the split's accepted")
	}
	if _, err := CalibrationFrom(train, int(train.Count)+1, T, 3); err == nil {
		t.Fatal("over-sized draw accepted")
	}
}

// TestGoSourceCorpus prepares a slice of the real Go source tree.
func TestGoSourceCorpus(t *testing.T) {
	src := fixture.GoSource(t, "strings")
	out := t.TempDir()
	m := prepare(t, "", out, PrepareOptions{Inputs: []string{src}, Include: []string{"*.go"}})
	ds, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	tk := tok(t)
	files, _ := filepath.Glob(filepath.Join(src, "*.go"))
	if m.Documents != int64(len(files)) {
		t.Fatalf("%d documents from %d files", m.Documents, len(files))
	}
	first, _ := os.ReadFile(files[0])
	var doc []int32
	ds.Documents(func(d []int32) bool { doc = append([]int32(nil), d...); return false })
	if want := append(tk.Encode(string(first)), tk.EOS()); !slices.Equal(doc, want) {
		t.Fatalf("first document differs from the tokenized %s", files[0])
	}
}

// A dataset small enough to cache whole is decoded once however its
// sequences are drawn; a larger one keeps only its most recent batches.
func TestCacheHoldsSmallDataset(t *testing.T) {
	for _, c := range []struct {
		batch  int
		tokens int64
		want   int
	}{
		{65536, 45_965_253, 45_965_253}, // the default recipe's Go source: whole
		{65536, 64 << 20, 64 << 20},
		{65536, 64<<20 + 1, 1 << 20}, // larger: 16 batches, at least 1M tokens
		{1 << 20, 94e9, 16 << 20},
		{13, 5000, 1 << 20},
	} {
		if got := cacheLimit(&Manifest{BatchTokens: c.batch, Tokens: c.tokens}); got != c.want {
			t.Errorf("%d tokens in batches of %d: cache of %d tokens, want %d", c.tokens, c.batch, got, c.want)
		}
	}
	ds, all := syntheticDataset(t, 400, "cache")
	nb := (len(all) + int(ds.Manifest.BatchTokens) - 1) / int(ds.Manifest.BatchTokens)
	if ds.decodes != nb {
		t.Fatalf("reading the stream once decoded %d batches, want %d", ds.decodes, nb)
	}
	train, _, err := ds.Split(5, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := NewLoader([]Source{{Name: "a", Split: train, Weight: 1}}, 5, true)
	for range 3 * train.Count {
		if _, _, err := l.Next(nil); err != nil {
			t.Fatal(err)
		}
	}
	if ds.decodes != nb {
		t.Fatalf("three shuffled epochs decoded %d batches in all, want the %d of the first read", ds.decodes, nb)
	}
	// Bounded: with a limit of 16 batches, shuffled reads decode again.
	small, err := Open(ds.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	small.limit = 16 * ds.Manifest.BatchTokens
	strain, _, err := small.Split(5, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	sl, _ := NewLoader([]Source{{Name: "a", Split: strain, Weight: 1}}, 5, true)
	for range strain.Count {
		if _, _, err := sl.Next(nil); err != nil {
			t.Fatal(err)
		}
	}
	if small.decodes <= 2*nb || small.cached > small.limit {
		t.Fatalf("a 16-batch cache: %d decodes in an epoch of %d batches, %d tokens held (limit %d)", small.decodes, nb, small.cached, small.limit)
	}
}
