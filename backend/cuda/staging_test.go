package cuda

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestStagingRing runs uploads of many sizes through a small ring against
// a simulated stream whose copies read the ring only when they complete
// (at an event wait, or at the end): every upload must arrive intact, so
// no piece of the ring may be overwritten before the copy from it ran.
func TestStagingRing(t *testing.T) {
	const chunk = 256
	type copyOp struct{ off, n, dst int }
	var queue []any // copyOp, or the int chunk of a recorded event
	dev := make([]byte, 1<<16)
	r := &stagingRing{buf: make([]byte, stageChunks*chunk), chunkSize: chunk}
	run := func(upTo func(any) bool) { // complete queued work in order
		for len(queue) > 0 {
			op := queue[0]
			queue = queue[1:]
			if c, ok := op.(copyOp); ok {
				copy(dev[c.dst:c.dst+c.n], r.buf[c.off:c.off+c.n])
			}
			if upTo(op) {
				return
			}
		}
	}
	waits := 0
	r.record = func(c int) error { queue = append(queue, c); return nil }
	r.wait = func(c int) error {
		waits++
		run(func(op any) bool { e, ok := op.(int); return ok && e == c })
		return nil
	}
	rng := rand.New(rand.NewPCG(1, 2))
	want := make([]byte, 0, len(dev))
	for len(want) < len(dev)-3*chunk {
		n := rng.IntN(3 * chunk)
		if rng.IntN(4) == 0 {
			n = rng.IntN(8) + 1
		}
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		dst := len(want)
		if err := r.put(data, func(off, n, at int) error {
			if off < 0 || off+n > len(r.buf) || off%stageAlign != 0 {
				t.Fatalf("piece at %d+%d outside the ring or unaligned", off, n)
			}
			queue = append(queue, copyOp{off, n, dst + at})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		want = append(want, data...)
	}
	run(func(any) bool { return false })
	if !bytes.Equal(dev[:len(want)], want) {
		t.Fatal("uploads arrived corrupted: a ring chunk was reused before its copy ran")
	}
	if waits == 0 {
		t.Fatal("the ring never wrapped; the test uploads too little")
	}
	r.idle()
	for _, p := range r.pending {
		if p {
			t.Fatal("idle left a chunk pending")
		}
	}
}
