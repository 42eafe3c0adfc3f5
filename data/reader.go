package data

import (
	"container/list"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Dataset is an opened prepared dataset: random access to its token stream.
// Shards are read one record batch at a time; a cache keeps recently
// decoded batches (a dataset of up to wholeCacheTokens tokens stays
// decoded whole), so memory stays bounded whatever the dataset's size.
type Dataset struct {
	Dir      string
	Manifest *Manifest
	starts   []int64 // stream offset of each shard's first token

	mu      sync.Mutex
	files   map[int]*shardFile
	cache   *list.List // of *cachedBatch, most recent first
	index   map[int64]*list.Element
	cached  int // tokens held by the cache
	limit   int // cache capacity in tokens
	decodes int // record batches decoded so far
}

// wholeCacheTokens is the size (64M tokens, 256 MB decoded) up to which a
// dataset's decoded batches all stay in the cache. Shuffled training reads
// sequences from all over the stream, so a smaller cache decodes a record
// batch for nearly every sequence, and each decode costs far more than the
// batch's tokens: the Arrow reader starts a new zstd decoder (megabytes of
// buffers) per record batch. A dataset of this size is decoded once.
const wholeCacheTokens = 64 << 20

type shardFile struct {
	f *os.File
	r *ipc.FileReader
}

type cachedBatch struct {
	batch  int64 // global batch number
	tokens []int32
	starts []int32
}

// Open opens a prepared dataset.
func Open(dir string) (*Dataset, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	d := &Dataset{Dir: dir, Manifest: m, files: map[int]*shardFile{}, cache: list.New(), index: map[int64]*list.Element{}, limit: cacheLimit(m)}
	var off int64
	for _, s := range m.Shards {
		st, err := os.Stat(filepath.Join(dir, s.File))
		if err != nil {
			return nil, fmt.Errorf("data: %s: shard listed in the manifest is missing: %w", dir, err)
		}
		if st.Size() != s.Bytes {
			return nil, fmt.Errorf("data: %s: shard %s has %d bytes, the manifest says %d (damaged?)", dir, s.File, st.Size(), s.Bytes)
		}
		d.starts = append(d.starts, off)
		off += s.Tokens
	}
	return d, nil
}

// cacheLimit is the decoded-batch cache's capacity in tokens: 16 batches,
// at least 1M tokens (4 MB), and the whole dataset when it has at most
// wholeCacheTokens; a dataset of small batches would otherwise decompress
// one for nearly every shuffled read.
func cacheLimit(m *Manifest) int {
	limit := max(16*m.BatchTokens, 1<<20)
	if m.Tokens <= wholeCacheTokens {
		limit = max(limit, int(m.Tokens))
	}
	return limit
}

// Close closes the shard files.
func (d *Dataset) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.files {
		s.r.Close()
		s.f.Close()
	}
	d.files = map[int]*shardFile{}
	return nil
}

// Verify checks every shard's checksum against the manifest.
func (d *Dataset) Verify() error {
	for _, s := range d.Manifest.Shards {
		sum, err := fileSHA256(filepath.Join(d.Dir, s.File))
		if err != nil {
			return fmt.Errorf("data: %w", err)
		}
		if sum != s.SHA256 {
			return fmt.Errorf("data: %s: shard %s does not match its checksum (damaged or replaced)", d.Dir, s.File)
		}
	}
	return nil
}

// Tokens is the length of the token stream.
func (d *Dataset) Tokens() int64 { return d.Manifest.Tokens }

// batch returns a decoded batch by global number (callers hold d.mu).
func (d *Dataset) batch(b int64) (*cachedBatch, error) {
	if e, ok := d.index[b]; ok {
		d.cache.MoveToFront(e)
		return e.Value.(*cachedBatch), nil
	}
	off := b * int64(d.Manifest.BatchTokens)
	s := sort.Search(len(d.starts), func(i int) bool { return d.starts[i] > off }) - 1
	if s < 0 || off >= d.Manifest.Tokens {
		return nil, fmt.Errorf("data: %s: batch %d is outside the stream", d.Dir, b)
	}
	sf, ok := d.files[s]
	if !ok {
		f, err := os.Open(filepath.Join(d.Dir, d.Manifest.Shards[s].File))
		if err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
		r, err := ipc.NewFileReader(f, ipc.WithAllocator(memory.NewGoAllocator()))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("data: %s: shard %s is not a readable Arrow file: %w", d.Dir, d.Manifest.Shards[s].File, err)
		}
		if !r.Schema().Equal(schema) {
			r.Close()
			f.Close()
			return nil, fmt.Errorf("data: %s: shard %s has schema %s, want %s", d.Dir, d.Manifest.Shards[s].File, r.Schema(), schema)
		}
		sf = &shardFile{f: f, r: r}
		d.files[s] = sf
	}
	i := int((off - d.starts[s]) / int64(d.Manifest.BatchTokens))
	if i >= sf.r.NumRecords() {
		return nil, fmt.Errorf("data: %s: shard %s has %d batches, batch %d was asked for", d.Dir, d.Manifest.Shards[s].File, sf.r.NumRecords(), i)
	}
	d.decodes++
	rec, err := sf.r.RecordBatch(i)
	if err != nil {
		return nil, fmt.Errorf("data: %s: shard %s batch %d: %w", d.Dir, d.Manifest.Shards[s].File, i, err)
	}
	tokens, starts, err := readBatch(rec)
	if err != nil {
		return nil, fmt.Errorf("data: %s: shard %s batch %d: %w", d.Dir, d.Manifest.Shards[s].File, i, err)
	}
	cb := &cachedBatch{batch: b, tokens: append([]int32(nil), tokens...), starts: append([]int32(nil), starts...)}
	want := min(int64(d.Manifest.BatchTokens), d.Manifest.Tokens-off)
	if int64(len(cb.tokens)) != want {
		return nil, fmt.Errorf("data: %s: shard %s batch %d has %d tokens, want %d", d.Dir, d.Manifest.Shards[s].File, i, len(cb.tokens), want)
	}
	d.index[b] = d.cache.PushFront(cb)
	d.cached += len(cb.tokens)
	for d.cached > d.limit && d.cache.Len() > 1 {
		e := d.cache.Back()
		old := e.Value.(*cachedBatch)
		d.cache.Remove(e)
		delete(d.index, old.batch)
		d.cached -= len(old.tokens)
	}
	return cb, nil
}

// Read appends stream tokens [off, off+n) to dst.
func (d *Dataset) Read(dst []int32, off, n int64) ([]int32, error) {
	if off < 0 || n < 0 || off+n > d.Manifest.Tokens {
		return dst, fmt.Errorf("data: %s: tokens [%d, %d) outside the %d-token stream", d.Dir, off, off+n, d.Manifest.Tokens)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	bt := int64(d.Manifest.BatchTokens)
	for n > 0 {
		b, err := d.batch(off / bt)
		if err != nil {
			return dst, err
		}
		i := off - b.batch*bt
		k := min(n, int64(len(b.tokens))-i)
		dst = append(dst, b.tokens[i:i+k]...)
		off += k
		n -= k
	}
	return dst, nil
}

// Documents calls f with each document's tokens in stream order until f
// returns false (for inspection; documents are reassembled across batches).
func (d *Dataset) Documents(f func(doc []int32) bool) error {
	bt := int64(d.Manifest.BatchTokens)
	nb := (d.Manifest.Tokens + bt - 1) / bt
	var cur []int32
	started := false
	for b := range nb {
		d.mu.Lock()
		cb, err := d.batch(b)
		d.mu.Unlock()
		if err != nil {
			return err
		}
		prev := 0
		for _, s := range cb.starts {
			cur = append(cur, cb.tokens[prev:s]...)
			if started && !f(cur) {
				return nil
			}
			cur, started, prev = cur[:0], true, int(s)
		}
		cur = append(cur, cb.tokens[prev:]...)
	}
	if started && len(cur) > 0 {
		f(cur)
	}
	return nil
}
