package diskio

import (
	"os"
	"sync/atomic"
	"unsafe"
)

// streamWriter writes a file front to back and keeps it moving to disk as
// it goes. The first directAfter bytes go through the page cache, each
// chunk's write-back started as it is written (so dirty pages never pile
// up and stall other readers of the disk, or the final fsync). A file that
// grows past that continues with direct I/O where the system allows it
// (Linux): large aligned writes from this process's memory straight to
// the disk, in the background while the producer goes on, without the
// page cache's cost of taking a fresh page for every 4 KB written.
// Align is the offset, length and memory alignment direct reads and
// writes use: a multiple of every common logical block size.
const Align = 4096

type streamWriter struct {
	f        *os.File
	off      int64 // bytes written
	started  int64 // write-back started for [0, started)
	finished int64 // on disk: [0, finished)
	d        *directSink
	tried    bool
}

var (
	// writebackChunk is the unit of write-back of the buffered part.
	writebackChunk int64 = 32 << 20
	// directAfter is the size past which a file continues with direct I/O.
	directAfter int64 = 64 << 20
	// directBuffer is the size of each direct write.
	directBuffer = 8 << 20
)

func (s *streamWriter) Write(p []byte) (int, error) {
	if s.d == nil && !s.tried && s.off+int64(len(p)) > directAfter {
		// Direct writes start at an aligned offset.
		if r := s.off % Align; r != 0 {
			k := int(min(int64(len(p)), Align-r))
			n, err := s.writeBuffered(p[:k])
			if err != nil || k == len(p) {
				return n, err
			}
			m, err := s.Write(p[k:])
			return n + m, err
		}
		s.tried = true
		if f, err := openDirectWrite(s.f.Name()); err == nil {
			s.d = newDirectSink(f, s.f, s.off)
		}
	}
	if s.d != nil {
		n, err := s.d.write(p)
		s.off += int64(n)
		return n, err
	}
	return s.writeBuffered(p)
}

func (s *streamWriter) writeBuffered(p []byte) (int, error) {
	n, err := s.f.Write(p)
	s.off += int64(n)
	if s.off-s.started >= writebackChunk {
		startWriteback(s.f, s.started, s.off-s.started)
		// Wait for the previous chunk, which has had a chunk's time.
		if s.started > s.finished {
			waitWriteback(s.f, s.finished, s.started-s.finished)
			s.finished = s.started
		}
		s.started = s.off
	}
	return n, err
}

// finish writes what is still buffered; the caller then syncs s.f. It is
// also what stops the background writer after a failure.
func (s *streamWriter) finish() error {
	if s.d == nil {
		return nil
	}
	d := s.d
	s.d = nil
	return d.finish()
}

// directSink writes a file's bytes from an aligned offset on with direct
// I/O: bytes gather in aligned buffers, and each full one is written by a
// background goroutine while the next fills. The unaligned tail goes
// through the buffered file. A file system that refuses a direct write
// gets that write, and the rest, through the buffered file.
type directSink struct {
	direct, buffered *os.File
	off              int64 // file offset of buf[0]
	buf              []byte
	free             chan []byte
	jobs             chan directJob
	done             chan error
	failed           atomic.Pointer[error] // the writer's first error, seen early
}

// directWrites counts direct writes done (for tests).
var directWrites atomic.Int64

type directJob struct {
	b   []byte
	off int64
}

func newDirectSink(direct, buffered *os.File, start int64) *directSink {
	d := &directSink{direct: direct, buffered: buffered, off: start, free: make(chan []byte, 2), jobs: make(chan directJob, 1), done: make(chan error, 1)}
	for range 2 {
		d.free <- AlignedBuffer(directBuffer)
	}
	d.buf = <-d.free
	go func() {
		var first error
		useDirect := true
		for j := range d.jobs {
			if first == nil {
				var err error
				if useDirect {
					if _, err = d.direct.WriteAt(j.b, j.off); err != nil && IsRefused(err) {
						useDirect = false
					} else if err == nil {
						directWrites.Add(1)
					}
				}
				if !useDirect {
					_, err = d.buffered.WriteAt(j.b, j.off)
				}
				if err != nil {
					first = err
					d.failed.Store(&first)
				}
			}
			d.free <- j.b[:0]
		}
		d.done <- first
	}()
	return d
}

func (d *directSink) write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if e := d.failed.Load(); e != nil {
			return n, *e
		}
		k := copy(d.buf[len(d.buf):cap(d.buf)], p)
		d.buf = d.buf[:len(d.buf)+k]
		p, n = p[k:], n+k
		if len(d.buf) == cap(d.buf) {
			d.jobs <- directJob{d.buf, d.off}
			d.off += int64(len(d.buf))
			d.buf = <-d.free
		}
	}
	return n, nil
}

// finish writes the last partial buffer (its aligned part direct, the
// rest buffered), waits for the writer and closes the direct file.
func (d *directSink) finish() error {
	whole := len(d.buf) / Align * Align
	tail := append([]byte(nil), d.buf[whole:]...)
	if whole > 0 {
		d.jobs <- directJob{d.buf[:whole], d.off}
	}
	close(d.jobs)
	err := <-d.done
	if err == nil && len(tail) > 0 {
		_, err = d.buffered.WriteAt(tail, d.off+int64(whole))
	}
	if cerr := d.direct.Close(); err == nil {
		err = cerr
	}
	return err
}

// AlignedBuffer returns an empty slice of capacity n whose memory starts
// at an Align boundary, as direct reads and writes need.
func AlignedBuffer(n int) []byte {
	b := make([]byte, n+Align)
	shift := (Align - int(uintptr(unsafe.Pointer(unsafe.SliceData(b))))%Align) % Align
	return b[shift : shift : shift+n]
}
