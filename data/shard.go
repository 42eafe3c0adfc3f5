package data

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/minitron/minitron/diskio"
)

// shardWriter appends documents to the token stream and cuts it into
// batches and shards. Shards are written under temporary names and renamed
// when complete, so a killed run leaves no file a reader would take.
type shardWriter struct {
	dir         string
	batchTokens int
	shardTokens int64

	buf    []int32 // tokens of the current batch
	starts []int32 // document starts within it

	f       *os.File
	bw      *bufio.Writer
	h       hash.Hash
	n       int64 // bytes written
	ipcw    *ipc.FileWriter
	cur     Shard
	shards  []Shard
	docs    int64
	tokens  int64
	mem     memory.Allocator
	builder *array.RecordBuilder
}

func newShardWriter(dir string, batchTokens int, shardTokens int64) *shardWriter {
	shardTokens = max(shardTokens/int64(batchTokens), 1) * int64(batchTokens)
	mem := memory.NewGoAllocator()
	return &shardWriter{dir: dir, batchTokens: batchTokens, shardTokens: shardTokens, mem: mem,
		builder: array.NewRecordBuilder(mem, schema)}
}

func shardName(i int) string { return fmt.Sprintf("shard-%05d.arrow", i) }

// add appends one document's tokens.
func (w *shardWriter) add(doc []int32) error {
	w.starts = append(w.starts, int32(len(w.buf)))
	w.docs++
	w.cur.Documents++
	for len(doc) > 0 {
		n := min(len(doc), w.batchTokens-len(w.buf))
		w.buf = append(w.buf, doc[:n]...)
		doc = doc[n:]
		if len(w.buf) == w.batchTokens {
			if err := w.flushBatch(); err != nil {
				return err
			}
		}
	}
	return nil
}

type countingWriter struct {
	w io.Writer
	n *int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	*c.n += int64(n)
	return n, err
}

func (w *shardWriter) open() error {
	name := shardName(len(w.shards))
	f, err := os.Create(filepath.Join(w.dir, "."+name+".tmp"))
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	w.f, w.h, w.n = f, sha256.New(), 0
	w.bw = bufio.NewWriterSize(f, 1<<20)
	w.ipcw, err = ipc.NewFileWriter(countingWriter{io.MultiWriter(w.bw, w.h), &w.n}, ipc.WithSchema(schema), ipc.WithZstd(), ipc.WithAllocator(w.mem))
	if err != nil {
		f.Close()
		return fmt.Errorf("data: %w", err)
	}
	w.cur = Shard{File: name, Documents: w.cur.Documents}
	return nil
}

func (w *shardWriter) flushBatch() error {
	if len(w.buf) == 0 {
		return nil
	}
	if w.ipcw == nil {
		if err := w.open(); err != nil {
			return err
		}
	}
	tb := w.builder.Field(0).(*array.ListBuilder)
	tb.Append(true)
	tb.ValueBuilder().(*array.Int32Builder).AppendValues(w.buf, nil)
	sb := w.builder.Field(1).(*array.ListBuilder)
	sb.Append(true)
	sb.ValueBuilder().(*array.Int32Builder).AppendValues(w.starts, nil)
	rec := w.builder.NewRecordBatch()
	err := w.ipcw.Write(rec)
	rec.Release()
	if err != nil {
		return fmt.Errorf("data: writing %s: %w", w.cur.File, err)
	}
	w.cur.Tokens += int64(len(w.buf))
	w.cur.Batches++
	w.tokens += int64(len(w.buf))
	w.buf, w.starts = w.buf[:0], w.starts[:0]
	if w.cur.Tokens >= w.shardTokens {
		return w.closeShard()
	}
	return nil
}

func (w *shardWriter) closeShard() error {
	if w.ipcw == nil {
		return nil
	}
	if err := w.ipcw.Close(); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if err := os.Rename(w.f.Name(), filepath.Join(w.dir, w.cur.File)); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	w.cur.SHA256, w.cur.Bytes = hex.EncodeToString(w.h.Sum(nil)), w.n
	w.shards = append(w.shards, w.cur)
	w.cur = Shard{}
	w.ipcw = nil
	return nil
}

// close flushes the last batch and shard.
func (w *shardWriter) close() error {
	if err := w.flushBatch(); err != nil {
		return err
	}
	if err := w.closeShard(); err != nil {
		return err
	}
	w.builder.Release()
	return diskio.SyncDir(w.dir)
}

// abort removes the temporary file of an unfinished shard.
func (w *shardWriter) abort() {
	if w.f != nil && w.ipcw != nil {
		w.f.Close()
		os.Remove(w.f.Name())
	}
}

// readBatch decodes one record batch into its tokens and document starts.
func readBatch(rec arrow.RecordBatch) (tokens, starts []int32, err error) {
	if rec.NumRows() != 1 || rec.NumCols() != 2 {
		return nil, nil, fmt.Errorf("record batch has %d rows and %d columns, want 1 and 2", rec.NumRows(), rec.NumCols())
	}
	get := func(c int) ([]int32, error) {
		l, ok := rec.Column(c).(*array.List)
		if !ok {
			return nil, fmt.Errorf("column %d is %s, want list<int32>", c, rec.Column(c).DataType())
		}
		v, ok := l.ListValues().(*array.Int32)
		if !ok {
			return nil, fmt.Errorf("column %d holds %s, want int32", c, l.ListValues().DataType())
		}
		b, e := l.ValueOffsets(0)
		return v.Int32Values()[b:e], nil
	}
	if tokens, err = get(0); err != nil {
		return nil, nil, err
	}
	starts, err = get(1)
	return tokens, starts, err
}
