package cuda

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/minitron/minitron/backend"
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

// TestGPUStagedUpload writes tensors larger than the pinned ring, and many
// small ones, and reads them back: uploads go through the ring (which must
// exist on a real driver and on the stand-ins) and arrive intact.
func TestGPUStagedUpload(t *testing.T) {
	b := openGPU(t)
	rng := rand.New(rand.NewPCG(3, 4))
	big := make([]float32, 3*stageChunks*stageChunkSize/4+77) // three times the ring, in f32
	for i := range big {
		big[i] = float32(rng.NormFloat64())
	}
	tb, err := b.New(backend.F32, len(big))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free(tb)
	var small []backend.Tensor
	var want [][]float32
	for i := range 300 {
		v := []float32{float32(i % 251), -float32(i % 7), 0.5} // exact in bf16
		s, err := b.FromFloat32(append([]float32(nil), v...), 3)
		if err != nil {
			t.Fatal(err)
		}
		small, want = append(small, s), append(want, v)
		if i == 150 {
			if err := b.Write(tb, big); err != nil {
				t.Fatal(err)
			}
		}
	}
	if g, ok := b.dev.(*gpu); !ok || g.stage == nil {
		t.Fatal("uploads did not go through pinned staging memory")
	}
	got, err := b.ToFloat32(tb)
	if err != nil {
		t.Fatal(err)
	}
	for i := range big {
		if got[i] != big[i] {
			t.Fatalf("element %d of the large upload: %v, want %v", i, got[i], big[i])
		}
	}
	for i, s := range small {
		g, err := b.ToFloat32(s)
		if err != nil {
			t.Fatal(err)
		}
		for j := range g {
			if g[j] != want[i][j] {
				t.Fatalf("small upload %d: %v, want %v", i, g, want[i])
			}
		}
		b.Free(s)
	}
}

// Where pinned memory is refused (or its events), uploads fall back to
// pageable copies, and nothing is left behind.
func TestStagingFallback(t *testing.T) {
	for _, call := range []string{"cuMemAllocHost_v2", "cuEventCreate"} {
		t.Run(call, func(t *testing.T) {
			c := newCLib(t)
			b, err := open(fakeDriver(t), fakeNVRTC(t), fakeCuBLAS(t), Options{CacheDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			c.fail[call] = 2 // CUDA_ERROR_OUT_OF_MEMORY
			x, err := b.FromFloat32([]float32{1, 2, 3}, 3)
			if err != nil {
				t.Fatal(err)
			}
			delete(c.fail, call)
			if got, err := b.ToFloat32(x); err != nil || fmt.Sprint(got) != "[1 2 3]" {
				t.Fatalf("round trip %v %v", got, err)
			}
			if g := b.dev.(*gpu); g.stage != nil || c.live["pinned"] != 0 {
				t.Fatalf("staging %v, %d pinned blocks", g.stage, c.live["pinned"])
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if l := c.leaks(); len(l) > 0 {
				t.Errorf("after Close: left %v", l)
			}
		})
	}
}
