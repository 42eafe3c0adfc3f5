package cuda

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/kernels"
)

// countingDevice is the fake device counting device-to-host copies, each
// of which waits for the stream.
type countingDevice struct {
	*fakeDevice
	dtohs int
}

func (c *countingDevice) dtoh(dst unsafe.Pointer, src uintptr, n int64) error {
	c.dtohs++
	return c.fakeDevice.dtoh(dst, src, n)
}

// TestSquaredNormOneRead: the squared norm of many tensors is reduced on
// the device with one partial-sum launch per tensor and one final sum, and
// read back once.
func TestSquaredNormOneRead(t *testing.T) {
	kern, err := kernels.Kernels()
	if err != nil {
		t.Fatal(err)
	}
	c := &countingDevice{fakeDevice: newFakeDevice()}
	b, err := newBackend(c, kern)
	if err != nil {
		t.Fatal(err)
	}
	var ts []backend.Tensor
	for i := range 40 {
		dt := backend.BF16
		if i%3 == 0 {
			dt = backend.F32
		}
		x, err := b.New(dt, 1+i*97)
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, x)
	}
	before := len(c.launches)
	if _, err := b.SquaredNorm(ts...); err != nil {
		t.Fatal(err)
	}
	if c.dtohs != 1 {
		t.Errorf("%d reads from the device for one squared norm, want 1", c.dtohs)
	}
	var norms, sums int
	for _, l := range c.launches[before:] {
		switch l.name {
		case "sqnorm":
			norms++
		case "sum_f64":
			sums++
		}
	}
	if norms != len(ts) || sums != 1 {
		t.Errorf("%d sqnorm and %d sum_f64 launches, want %d and 1", norms, sums, len(ts))
	}
}

// TestAdamWSeedPerTensor: the stochastic-rounding seed passed to the adamw
// kernel depends on the tensor id as well as the step, so same-shaped
// tensors updated in one step do not share their rounding noise.
func TestAdamWSeedPerTensor(t *testing.T) {
	b, f := fakeBackend(t)
	seedOf := func(step int, id uint32) uint32 {
		t.Helper()
		ts := make([]backend.Tensor, 4)
		for i := range ts {
			x, err := b.New(backend.BF16, 64, 3)
			if err != nil {
				t.Fatal(err)
			}
			ts[i] = x
		}
		p := backend.AdamW{LR: 1e-3, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, Step: step, GradScale: 1, Seed: id}
		if err := b.AdamW(ts[0], ts[1], ts[2], ts[3], p); err != nil {
			t.Fatal(err)
		}
		l := f.launches[len(f.launches)-1]
		if l.name != "adamw" {
			t.Fatalf("last launch %s, want adamw", l.name)
		}
		return uint32(l.args[len(l.args)-1].bits)
	}
	seen := map[uint32]string{}
	for step := 1; step <= 3; step++ {
		for id := range uint32(4) {
			s := seedOf(step, id)
			what := fmt.Sprintf("step %d tensor %d", step, id)
			if prev, dup := seen[s]; dup {
				t.Errorf("%s has the seed of %s (%#x)", what, prev, s)
			}
			seen[s] = what
		}
	}
	if a, b := seedOf(2, 1), seedOf(2, 1); a != b {
		t.Errorf("the seed of one (step, tensor) changes between calls: %#x, %#x", a, b)
	}
}
