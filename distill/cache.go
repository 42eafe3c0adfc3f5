package distill

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/diskio"
	"github.com/minitron/minitron/model"
)

// A teacher cache holds, for every sequence of a dataset (sequence g =
// stream tokens [g·SeqLen, g·SeqLen+SeqLen)), the teacher's top-k token ids
// and log-probabilities at a temperature for each position. Shards are
// Arrow IPC files whose record batches hold BatchSeqs rows (one per
// sequence) of two list columns, ids (int32) and logp (float32), each
// SeqLen·K long, position-major.

// CacheManifest describes a teacher cache (manifest.json, written last).
type CacheManifest struct {
	Format      int     `json:"format"`
	Teacher     string  `json:"teacher"`
	TeacherID   string  `json:"teacher_id"`
	Vocab       int     `json:"vocab_size"`
	Dataset     string  `json:"dataset"`
	DatasetID   string  `json:"dataset_id"`
	SeqLen      int     `json:"seq_len"`
	K           int     `json:"top_k"`
	Temperature float64 `json:"temperature"`
	// Missing is how readers should treat the probability mass outside the
	// top k: renormalize the k, or spread it uniformly over the rest.
	Missing   string   `json:"missing_mass"`
	Sequences int64    `json:"sequences"`
	BatchSeqs int      `json:"batch_sequences"`
	Shards    []string `json:"shards"`
	ShardSeqs int64    `json:"shard_sequences"`
}

var cacheSchema = arrow.NewSchema([]arrow.Field{
	{Name: "ids", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)},
	{Name: "logp", Type: arrow.ListOf(arrow.PrimitiveTypes.Float32)},
}, nil)

// CacheOptions configure CacheTeacher.
type CacheOptions struct {
	TeacherDir  string
	DatasetDir  string
	SeqLen      int
	K           int
	Temperature float64
	Missing     string
	Out         string
	BatchSeqs   int // sequences per record batch (default 16)
	ShardSeqs   int // sequences per shard (default 4096)
	MicroBatch  int // sequences per teacher forward (default 8)
	// Start, when set, is told the sequences and tokens the cache will
	// cover and its uncompressed size before the teacher runs (not
	// called when a finished cache is kept).
	Start    func(sequences, tokens, bytes int64)
	Progress func(done, total int64)
}

// BytesPerToken is a cache's uncompressed size per token: K token ids
// (int32) and K log-probabilities (float32).
func BytesPerToken(k int) int64 { return 8 * int64(k) }

// LossyTopK is the top-k below which the Minitron paper found the
// distilled student significantly less accurate (arXiv:2407.14679, A.5:
// top-K ≤ 100 logits).
const LossyTopK = 100

// DatasetID identifies a prepared dataset by its shards' checksums.
func DatasetID(m *data.Manifest) string {
	h := sha256.New()
	for _, s := range m.Shards {
		io.WriteString(h, s.SHA256)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// CacheTeacher runs the teacher once over every sequence of the dataset and
// stores its top-k log-probabilities. A finished cache of the same teacher,
// dataset and settings is kept.
func CacheTeacher(ctx context.Context, teacher *model.Model, opt CacheOptions) (*CacheManifest, error) {
	if opt.K <= 0 || opt.K > teacher.Config.VocabSize {
		return nil, fmt.Errorf("distill: top-k %d must be in [1, %d]", opt.K, teacher.Config.VocabSize)
	}
	if !(opt.Temperature > 0) {
		return nil, fmt.Errorf("distill: temperature %v must be positive", opt.Temperature)
	}
	if opt.Missing == "" {
		opt.Missing = backend.MissingRenormalize
	}
	if opt.Missing != backend.MissingRenormalize && opt.Missing != backend.MissingUniform {
		return nil, fmt.Errorf("distill: missing-mass policy %q: use %s or %s", opt.Missing, backend.MissingRenormalize, backend.MissingUniform)
	}
	if opt.BatchSeqs <= 0 {
		opt.BatchSeqs = 16
	}
	if opt.ShardSeqs <= 0 {
		opt.ShardSeqs = 4096
	}
	opt.ShardSeqs = max(opt.ShardSeqs/opt.BatchSeqs, 1) * opt.BatchSeqs
	if opt.MicroBatch <= 0 {
		opt.MicroBatch = 8
	}
	ds, err := data.Open(opt.DatasetDir)
	if err != nil {
		return nil, err
	}
	defer ds.Close()
	if v := ds.Manifest.Tokenizer.VocabSize; v > teacher.Config.VocabSize {
		return nil, fmt.Errorf("distill: %s was tokenized with %d tokens, the teacher knows %d", opt.DatasetDir, v, teacher.Config.VocabSize)
	}
	tid, err := model.DirIdentity(opt.TeacherDir)
	if err != nil {
		return nil, err
	}
	n := ds.Sequences(opt.SeqLen)
	if n == 0 {
		return nil, fmt.Errorf("distill: %s holds no sequence of %d tokens", opt.DatasetDir, opt.SeqLen+1)
	}
	man := &CacheManifest{Format: 1, Teacher: opt.TeacherDir, TeacherID: tid, Vocab: teacher.Config.VocabSize, Dataset: opt.DatasetDir,
		DatasetID: DatasetID(ds.Manifest), SeqLen: opt.SeqLen, K: opt.K, Temperature: opt.Temperature, Missing: opt.Missing,
		Sequences: n, BatchSeqs: opt.BatchSeqs, ShardSeqs: int64(opt.ShardSeqs)}
	if old, err := ReadCacheManifest(opt.Out); err == nil && old.sameAs(man) {
		return old, nil
	}
	if opt.Start != nil {
		tokens := n * int64(opt.SeqLen)
		opt.Start(n, tokens, tokens*BytesPerToken(opt.K))
	}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, fmt.Errorf("distill: %w", err)
	}
	os.Remove(filepath.Join(opt.Out, "manifest.json"))
	old, _ := filepath.Glob(filepath.Join(opt.Out, "cache-*.arrow"))
	for _, f := range old {
		os.Remove(f)
	}
	T, K := opt.SeqLen, opt.K
	a, err := teacher.NewActivations(opt.MicroBatch*T, false)
	if err != nil {
		return nil, err
	}
	defer func() {
		if a != nil { // nil after a failed reallocation
			a.Free(teacher.Backend)
		}
	}()
	mem := memory.NewGoAllocator()
	var w *shardWriter
	var rows struct {
		ids  [][]int32
		logp [][]float32
	}
	flushBatch := func() error {
		if len(rows.ids) == 0 {
			return nil
		}
		if w == nil {
			name := fmt.Sprintf("cache-%05d.arrow", len(man.Shards))
			if w, err = newShardWriter(filepath.Join(opt.Out, name), mem); err != nil {
				return err
			}
			man.Shards = append(man.Shards, name)
		}
		if err := w.write(rows.ids, rows.logp); err != nil {
			return err
		}
		rows.ids, rows.logp = rows.ids[:0], rows.logp[:0]
		if w.rows >= int64(opt.ShardSeqs) {
			err := w.close()
			w = nil
			return err
		}
		return nil
	}
	for g := int64(0); g < n; g += int64(opt.MicroBatch) {
		if err := ctx.Err(); err != nil {
			if w != nil {
				w.abort()
			}
			return nil, err
		}
		b := int(min(int64(opt.MicroBatch), n-g))
		if b != opt.MicroBatch {
			a.Free(teacher.Backend)
			if a, err = teacher.NewActivations(b*T, false); err != nil {
				return nil, err
			}
		}
		ids, err := ds.Read(nil, g*int64(T), int64(b*T))
		if err != nil {
			return nil, err
		}
		final, err := teacher.Hidden(a, model.Input{B: b, T: T, IDs: ids}, model.Options{})
		if err != nil {
			return nil, err
		}
		topIDs := make([]int32, b*T*K)
		topLogp := make([]float32, b*T*K)
		_, err = teacher.LogitsChunked(final, func(r0, r1 int, logits, losses backend.Tensor, _ float32) error {
			lv, err := teacher.Backend.ToFloat32(logits)
			if err != nil {
				return err
			}
			V := teacher.Config.VocabSize
			for r := r0; r < r1; r++ {
				topKLogProbs(lv[(r-r0)*V:(r-r0+1)*V], opt.Temperature, topIDs[r*K:(r+1)*K], topLogp[r*K:(r+1)*K])
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		for s := range b {
			rows.ids = append(rows.ids, topIDs[s*T*K:(s+1)*T*K])
			rows.logp = append(rows.logp, topLogp[s*T*K:(s+1)*T*K])
			if len(rows.ids) == opt.BatchSeqs {
				if err := flushBatch(); err != nil {
					return nil, err
				}
			}
		}
		if opt.Progress != nil {
			opt.Progress(g+int64(b), n)
		}
	}
	if err := flushBatch(); err != nil {
		return nil, err
	}
	if w != nil {
		if err := w.close(); err != nil {
			return nil, err
		}
	}
	b, _ := json.MarshalIndent(man, "", "  ")
	if err := diskio.WriteFileAtomic(filepath.Join(opt.Out, "manifest.json"), append(b, '\n')); err != nil {
		return nil, err
	}
	return man, nil
}

func (m *CacheManifest) sameAs(o *CacheManifest) bool {
	return m.TeacherID == o.TeacherID && m.DatasetID == o.DatasetID && m.SeqLen == o.SeqLen && m.K == o.K &&
		m.Temperature == o.Temperature && m.Missing == o.Missing && m.Sequences == o.Sequences && m.BatchSeqs == o.BatchSeqs
}

// topKLogProbs writes the k most likely tokens of softmax(logits/T) and
// their log-probabilities, most likely first.
func topKLogProbs(logits []float32, T float64, ids []int32, logp []float32) {
	mx := math.Inf(-1)
	for _, x := range logits {
		mx = math.Max(mx, float64(x)/T)
	}
	var s float64
	for _, x := range logits {
		s += math.Exp(float64(x)/T - mx)
	}
	lse := mx + math.Log(s)
	idx := make([]int32, len(logits))
	for i := range idx {
		idx[i] = int32(i)
	}
	sort.SliceStable(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	for j := range ids {
		ids[j] = idx[j]
		logp[j] = float32(float64(logits[idx[j]])/T - lse)
	}
}

// ReadCacheManifest loads a cache's manifest.
func ReadCacheManifest(dir string) (*CacheManifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, fmt.Errorf("distill: %s is not a finished teacher cache: %w", dir, err)
	}
	var m CacheManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("distill: %s/manifest.json: %w", dir, err)
	}
	if m.Format != 1 || m.K <= 0 || m.SeqLen <= 0 || m.BatchSeqs <= 0 || m.ShardSeqs <= 0 {
		return nil, fmt.Errorf("distill: %s/manifest.json: unsupported or damaged manifest", dir)
	}
	return &m, nil
}

type shardWriter struct {
	f    *os.File
	bw   *bufio.Writer
	w    *ipc.FileWriter
	b    *array.RecordBuilder
	path string
	rows int64
}

func newShardWriter(path string, mem memory.Allocator) (*shardWriter, error) {
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return nil, fmt.Errorf("distill: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	w, err := ipc.NewFileWriter(bw, ipc.WithSchema(cacheSchema), ipc.WithZstd(), ipc.WithAllocator(mem))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("distill: %w", err)
	}
	return &shardWriter{f: f, bw: bw, w: w, b: array.NewRecordBuilder(mem, cacheSchema), path: path}, nil
}

func (s *shardWriter) write(ids [][]int32, logp [][]float32) error {
	ib := s.b.Field(0).(*array.ListBuilder)
	lb := s.b.Field(1).(*array.ListBuilder)
	for i := range ids {
		ib.Append(true)
		ib.ValueBuilder().(*array.Int32Builder).AppendValues(ids[i], nil)
		lb.Append(true)
		lb.ValueBuilder().(*array.Float32Builder).AppendValues(logp[i], nil)
	}
	rec := s.b.NewRecordBatch()
	defer rec.Release()
	s.rows += int64(len(ids))
	if err := s.w.Write(rec); err != nil {
		return fmt.Errorf("distill: writing %s: %w", s.path, err)
	}
	return nil
}

func (s *shardWriter) close() error {
	if err := s.w.Close(); err != nil {
		return fmt.Errorf("distill: %w", err)
	}
	if err := s.bw.Flush(); err != nil {
		return fmt.Errorf("distill: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("distill: %w", err)
	}
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("distill: %w", err)
	}
	s.b.Release()
	return os.Rename(s.path+".tmp", s.path)
}

func (s *shardWriter) abort() {
	s.f.Close()
	os.Remove(s.path + ".tmp")
}

// TeacherCache reads a cache.
type TeacherCache struct {
	Dir      string
	Manifest *CacheManifest
	mu       sync.Mutex
	readers  map[int]*cacheReader
	cached   map[int64]*cacheBatch // by batch number (small LRU)
	order    []int64
}

type cacheReader struct {
	f *os.File
	r *ipc.FileReader
}

type cacheBatch struct {
	ids  []int32
	logp []float32
}

// OpenCache opens a teacher cache.
func OpenCache(dir string) (*TeacherCache, error) {
	m, err := ReadCacheManifest(dir)
	if err != nil {
		return nil, err
	}
	if want := (m.Sequences + m.ShardSeqs - 1) / m.ShardSeqs; int64(len(m.Shards)) != want {
		return nil, fmt.Errorf("distill: %s lists %d shards for %d sequences, want %d", dir, len(m.Shards), m.Sequences, want)
	}
	return &TeacherCache{Dir: dir, Manifest: m, readers: map[int]*cacheReader{}, cached: map[int64]*cacheBatch{}}, nil
}

// Close closes the shard files.
func (c *TeacherCache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.readers {
		r.r.Close()
		r.f.Close()
	}
}

// Sequence returns the top-k ids and log-probabilities of a dataset
// sequence (SeqLen·K each, position-major).
func (c *TeacherCache) Sequence(g int64) ([]int32, []float32, error) {
	m := c.Manifest
	if g < 0 || g >= m.Sequences {
		return nil, nil, fmt.Errorf("distill: sequence %d is not in the teacher cache (%d sequences)", g, m.Sequences)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	bn := g / int64(m.BatchSeqs)
	b, ok := c.cached[bn]
	if !ok {
		shard := int(g / m.ShardSeqs)
		r, ok := c.readers[shard]
		if !ok {
			f, err := os.Open(filepath.Join(c.Dir, m.Shards[shard]))
			if err != nil {
				return nil, nil, fmt.Errorf("distill: %w", err)
			}
			ir, err := ipc.NewFileReader(f, ipc.WithAllocator(memory.NewGoAllocator()))
			if err != nil {
				f.Close()
				return nil, nil, fmt.Errorf("distill: %s: %w", m.Shards[shard], err)
			}
			r = &cacheReader{f: f, r: ir}
			c.readers[shard] = r
		}
		within := int(bn - int64(shard)*m.ShardSeqs/int64(m.BatchSeqs))
		rec, err := r.r.RecordBatch(within)
		if err != nil {
			return nil, nil, fmt.Errorf("distill: %s batch %d: %w", m.Shards[shard], within, err)
		}
		il, ok1 := rec.Column(0).(*array.List)
		ll, ok2 := rec.Column(1).(*array.List)
		if !ok1 || !ok2 {
			return nil, nil, fmt.Errorf("distill: %s: unexpected columns", m.Shards[shard])
		}
		b = &cacheBatch{ids: append([]int32(nil), il.ListValues().(*array.Int32).Int32Values()...),
			logp: append([]float32(nil), ll.ListValues().(*array.Float32).Float32Values()...)}
		c.cached[bn] = b
		c.order = append(c.order, bn)
		if len(c.order) > 8 {
			delete(c.cached, c.order[0])
			c.order = c.order[1:]
		}
	}
	per := m.SeqLen * m.K
	i := int(g % int64(m.BatchSeqs))
	if (i+1)*per > len(b.ids) {
		return nil, nil, fmt.Errorf("distill: teacher cache batch %d is short (damaged cache)", bn)
	}
	return b.ids[i*per : (i+1)*per], b.logp[i*per : (i+1)*per], nil
}
