package cuda

import (
	"unsafe"
)

// Host-to-device copies go through a ring of pinned (page-locked) host
// memory: the caller's bytes are copied into the ring and the device copy
// is queued on the stream from there. From pageable memory the driver
// stages the copy itself and may wait for the stream first; from pinned
// memory the call returns at once and the copy overlaps queued kernels.

const (
	stageChunks    = 4
	stageChunkSize = 2 << 20
	stageAlign     = 64
)

// stagingRing hands out pieces of a host buffer split into chunks. A chunk
// is written again only after the copies queued from it have completed:
// leaving a chunk records an event on the stream (record), and entering
// one whose event was recorded waits for it (wait). Large copies go
// through in chunk-sized pieces, so they pipeline.
type stagingRing struct {
	buf       []byte
	chunkSize int
	cur, off  int
	pending   [stageChunks]bool // the chunk's event was recorded and not yet waited for
	record    func(chunk int) error
	wait      func(chunk int) error
}

// put copies data through the ring, calling send(offset in buf, length,
// offset in data) for each piece once it is in buf.
func (r *stagingRing) put(data []byte, send func(off, n, at int) error) error {
	for at := 0; at < len(data); {
		if r.off >= r.chunkSize {
			if err := r.advance(); err != nil {
				return err
			}
		}
		n := min(len(data)-at, r.chunkSize-r.off)
		o := r.cur*r.chunkSize + r.off
		copy(r.buf[o:o+n], data[at:at+n])
		if err := send(o, n, at); err != nil {
			return err
		}
		r.off += (n + stageAlign - 1) / stageAlign * stageAlign
		at += n
	}
	return nil
}

// advance closes the current chunk and opens the next one.
func (r *stagingRing) advance() error {
	if err := r.record(r.cur); err != nil {
		return err
	}
	r.pending[r.cur] = true
	r.cur, r.off = (r.cur+1)%stageChunks, 0
	if r.pending[r.cur] {
		if err := r.wait(r.cur); err != nil {
			return err
		}
		r.pending[r.cur] = false
	}
	return nil
}

// idle marks every chunk free: the stream has drained.
func (r *stagingRing) idle() {
	r.pending = [stageChunks]bool{}
}

// staging is the gpu's ring: pinned memory from cuMemAllocHost and one
// event per chunk.
type staging struct {
	host   unsafe.Pointer // C memory
	events [stageChunks]uintptr
	ring   stagingRing
}

const eventDisableTiming = 2

// startStaging allocates the pinned ring; the context is current. It
// returns nil, and copies stay pageable, where pinned memory is refused.
func (g *gpu) startStaging() *staging {
	d := g.drv
	s := &staging{}
	size := stageChunks * stageChunkSize
	if d.check("cuMemAllocHost_v2", d.cuMemAllocHost.call(uintptr(unsafe.Pointer(&s.host)), uintptr(size))) != nil || s.host == nil {
		return nil
	}
	for i := range s.events {
		if d.check("cuEventCreate", d.cuEventCreate.call(uintptr(unsafe.Pointer(&s.events[i])), eventDisableTiming)) != nil {
			s.free(d)
			return nil
		}
	}
	s.ring = stagingRing{
		buf:       unsafe.Slice((*byte)(s.host), size),
		chunkSize: stageChunkSize,
		record: func(c int) error {
			return d.check("cuEventRecord", d.cuEventRecord.call(s.events[c], g.stream))
		},
		wait: func(c int) error {
			return d.check("cuEventSynchronize", d.cuEventSynchronize.call(s.events[c]))
		},
	}
	return s
}

// free releases the ring; the context is current and the stream idle.
func (s *staging) free(d *driver) {
	for _, e := range s.events {
		if e != 0 {
			d.cuEventDestroy.call(e)
		}
	}
	if s.host != nil {
		d.cuMemFreeHost.call(uintptr(s.host))
	}
	*s = staging{}
}

// htodStaged queues a copy of bytes at src to dst through the ring; the
// context is current. It reports false when there is no ring.
func (g *gpu) htodStaged(dst uintptr, src unsafe.Pointer, bytes int64) (bool, error) {
	if !g.stageTried {
		g.stageTried = true
		g.stage = g.startStaging()
	}
	if g.stage == nil {
		return false, nil
	}
	data := unsafe.Slice((*byte)(src), bytes)
	return true, g.stage.ring.put(data, func(off, n, at int) error {
		return g.drv.check("cuMemcpyHtoDAsync_v2", g.drv.cuMemcpyHtoDAsync.call(dst+uintptr(at), uintptr(g.stage.host)+uintptr(off), uintptr(n), g.stream))
	})
}
