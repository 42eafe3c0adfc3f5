package checkpoints

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/minitron/minitron/diskio"
)

// Span is a byte range [Off, Off+Len) of one tensor's data.
type Span struct{ Off, Len int64 }

// SpanReader reads scattered byte ranges of tensors with many positioned
// reads in flight, so a slice that needs a third of a checkpoint's rows
// reads about a third of its bytes, at the disk's speed, without mapping
// the file or growing the process's memory.
//
// With Direct the reads bypass the page cache (O_DIRECT, Linux): a source
// larger than memory is read once, straight into the caller's buffer, and
// does not evict everything else. Where the system refuses direct I/O for
// a file, that file is read through the page cache instead.
//
// One goroutine at a time may call Read (each call has many reads in
// flight of its own).
type SpanReader struct {
	t       *Tensors
	direct  bool
	mu      sync.Mutex
	handles map[string]*spanFile
	// Workers is the number of reads in flight (default 32).
	Workers int
	// MergeGap joins two ranges whose gap is at most this many bytes into
	// one read: reading a short gap costs less than another request
	// (default 32 KB).
	MergeGap int64
	// MaxRead splits larger reads so they proceed in parallel (default 1 MB).
	MaxRead int64
	read    atomic.Int64
}

// BytesRead is the number of bytes read from disk so far (with alignment
// and merged gaps).
func (r *SpanReader) BytesRead() int64 { return r.read.Load() }

type spanFile struct {
	f      *os.File
	size   int64
	direct atomic.Bool
}

// NewSpanReader returns a reader of t's tensors; direct asks for reads
// that bypass the page cache where the system allows it.
func NewSpanReader(t *Tensors, direct bool) *SpanReader {
	return &SpanReader{t: t, direct: direct, handles: map[string]*spanFile{}, Workers: 32, MergeGap: 32 << 10, MaxRead: 1 << 20}
}

// Close closes the files the reader opened (not t's).
func (r *SpanReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, h := range r.handles {
		errs = append(errs, h.f.Close())
	}
	r.handles = map[string]*spanFile{}
	return errors.Join(errs...)
}

// Direct reports whether reads of the file holding tensor name bypass the
// page cache (after the first read: a refused direct read switches the file
// to buffered reads).
func (r *SpanReader) Direct(name string) bool {
	info, ok := r.t.Info(name)
	if !ok {
		return false
	}
	h, err := r.file(info.File)
	return err == nil && h.direct.Load()
}

func (r *SpanReader) file(path string) (*spanFile, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h, ok := r.handles[path]; ok {
		return h, nil
	}
	h := &spanFile{}
	if r.direct {
		if f, err := diskio.OpenDirect(path); err == nil {
			h.f = f
			h.direct.Store(true)
		}
	}
	if h.f == nil {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("checkpoints: %w", err)
		}
		h.f = f
	}
	st, err := h.f.Stat()
	if err != nil {
		h.f.Close()
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	h.size = st.Size()
	r.handles[path] = h
	return h, nil
}

// extent is one read: file bytes [off, off+n) into buf[at:].
type extent struct{ off, n, at int64 }

// Read reads spans of tensor name, which must be in ascending order and
// not overlap, into buf (reallocated when too small, so use the returned
// slice) and returns it with, for each span, the index in it of the span's
// first byte.
func (r *SpanReader) Read(name string, spans []Span, buf []byte) ([]byte, []int64, error) {
	info, ok := r.t.Info(name)
	if !ok {
		return buf, nil, fmt.Errorf("checkpoints: %s: no tensor %q", r.t.Source, name)
	}
	h, err := r.file(info.File)
	if err != nil {
		return buf, nil, err
	}
	size := info.End - info.Begin
	for i, s := range spans {
		if s.Off < 0 || s.Len < 0 || s.Off+s.Len > size || i > 0 && s.Off < spans[i-1].Off+spans[i-1].Len {
			return buf, nil, fmt.Errorf("checkpoints: %s: tensor %q: byte range [%d, %d) is outside its %d bytes or out of order", info.File, name, s.Off, s.Off+s.Len, size)
		}
	}
	for {
		direct := h.direct.Load()
		var pos []int64
		var exts []extent
		buf, pos, exts = r.plan(info.Begin, spans, buf, direct)
		err := r.readAll(h.f, h.size, exts, buf)
		if err == nil {
			return buf, pos, nil
		}
		if direct && diskio.IsRefused(err) {
			// The file system does not do direct I/O after all (or not with
			// this alignment): read through the page cache from now on.
			if f, oerr := os.Open(info.File); oerr == nil {
				r.mu.Lock()
				h.f.Close()
				h.f = f
				h.direct.Store(false)
				r.mu.Unlock()
				continue
			}
		}
		return buf, nil, fmt.Errorf("checkpoints: %s: reading tensor %q: %w", info.File, name, err)
	}
}

// plan turns spans of the tensor starting at file offset base into reads:
// aligned for direct I/O, joined across short gaps, split into pieces of
// at most MaxRead, laid out one after another in buf.
func (r *SpanReader) plan(base int64, spans []Span, buf []byte, direct bool) ([]byte, []int64, []extent) {
	align := int64(1)
	if direct {
		align = diskio.Align
	}
	var merged []extent // file ranges, at unset
	pos := make([]int64, len(spans))
	for i, s := range spans {
		lo := (base + s.Off) / align * align
		hi := (base + s.Off + s.Len + align - 1) / align * align
		if k := len(merged) - 1; k >= 0 && lo-(merged[k].off+merged[k].n) <= r.MergeGap {
			merged[k].n = max(merged[k].n, hi-merged[k].off)
		} else {
			merged = append(merged, extent{off: lo, n: hi - lo})
		}
		pos[i] = int64(len(merged) - 1) // the extent, resolved below
	}
	var total int64
	for k := range merged {
		merged[k].at = total
		total += merged[k].n
	}
	for i, s := range spans {
		e := merged[pos[i]]
		pos[i] = e.at + base + s.Off - e.off
	}
	// Room to align the start of the data in memory.
	if need := total + align; int64(cap(buf)) < need {
		buf = make([]byte, need)
	}
	buf = buf[:cap(buf)]
	shift := int64(0)
	if direct {
		shift = (align - int64(uintptr(unsafe.Pointer(unsafe.SliceData(buf))))%align) % align
	}
	piece := max(align, r.MaxRead/align*align)
	var exts []extent
	for _, e := range merged {
		for o := int64(0); o < e.n; o += piece {
			exts = append(exts, extent{off: e.off + o, n: min(piece, e.n-o), at: shift + e.at + o})
		}
	}
	for i := range pos {
		pos[i] += shift
	}
	return buf[:shift+total], pos, exts
}

// readAll performs the reads with up to Workers in flight.
func (r *SpanReader) readAll(f *os.File, size int64, exts []extent, buf []byte) error {
	workers := max(1, min(r.Workers, len(exts)))
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(exts)) {
					return
				}
				e := exts[i]
				if e.off >= size {
					continue // alignment padding past the end
				}
				n, err := f.ReadAt(buf[e.at:e.at+e.n], e.off)
				r.read.Add(int64(n))
				// A direct read of the last aligned block stops at the end
				// of the file; the bytes asked for are all there.
				if err == io.EOF && e.off+int64(n) == size {
					err = nil
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					next.Store(int64(len(exts)))
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
