package dist

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu"
)

func localRanks(n int) ([]backend.Backend, []*Local) {
	bs := make([]backend.Backend, n)
	for i := range bs {
		bs[i] = cpu.New()
	}
	return bs, NewLocal(bs)
}

// The in-process communicator sums in rank order in float32, as the
// stand-in NCCL does, and moves parts where the contract says.
func TestLocalCollectives(t *testing.T) {
	const n, part = 3, 5
	bs, cs := localRanks(n)
	in := func(r, i int) float32 { return float32(i)*0.1 + float32(r)*0.37 }
	g := NewGroup(n, nil)
	defer g.Close()
	err := g.Do(func(r int) error {
		b, c := bs[r], cs[r]
		vals := make([]float32, n*part)
		for i := range vals {
			vals[i] = in(r, i)
		}
		x, _ := b.FromFloat32(append([]float32(nil), vals...), n*part)
		if err := c.AllReduce(x); err != nil {
			return err
		}
		got, _ := b.ToFloat32(x)
		for i, v := range got {
			if want := in(0, i) + in(1, i) + in(2, i); v != want {
				return fmt.Errorf("AllReduce[%d] = %v, want %v", i, v, want)
			}
		}
		src, _ := b.FromFloat32(append([]float32(nil), vals...), n*part)
		dst, _ := b.View(src, r*part, part)
		if err := c.ReduceScatter(dst, src); err != nil {
			return err
		}
		got, _ = b.ToFloat32(dst)
		for i, v := range got {
			if want := in(0, r*part+i) + in(1, r*part+i) + in(2, r*part+i); v != want {
				return fmt.Errorf("ReduceScatter[%d] = %v, want %v", i, v, want)
			}
		}
		all, _ := b.New(backend.F32, n*part)
		mine, _ := b.View(all, r*part, part)
		b.Write(mine, vals[:part])
		if err := c.AllGather(all, mine); err != nil {
			return err
		}
		got, _ = b.ToFloat32(all)
		for i, v := range got {
			if want := in(i/part, i%part); v != want {
				return fmt.Errorf("AllGather[%d] = %v, want %v", i, v, want)
			}
		}
		y, _ := b.FromFloat32(append([]float32(nil), vals...), n*part)
		if err := c.Broadcast(y, 1); err != nil {
			return err
		}
		got, _ = b.ToFloat32(y)
		for i, v := range got {
			if want := in(1, i); v != want {
				return fmt.Errorf("Broadcast[%d] = %v, want %v", i, v, want)
			}
		}
		s := []float64{float64(r), 1}
		if err := c.SumFloat64(s); err != nil {
			return err
		}
		if s[0] != 3 || s[1] != 3 {
			return fmt.Errorf("SumFloat64 = %v, want [3 3]", s)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Ranks that call different collectives all get an error naming both.
func TestLocalMismatch(t *testing.T) {
	bs, cs := localRanks(2)
	g := NewGroup(2, nil)
	defer g.Close()
	errs := make([]error, 2)
	g.Do(func(r int) error {
		x, _ := bs[r].New(backend.F32, 4+r)
		errs[r] = cs[r].AllReduce(x)
		return nil
	})
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "rank 0 called AllReduce of 4 while rank 1 called AllReduce of 5") {
			t.Errorf("rank %d: %v", r, err)
		}
	}
}

// When a rank fails, the group aborts the communicator: the ranks blocked
// in a collective return, and Do reports the failure, not the aborts.
func TestGroupAbortsOnFailure(t *testing.T) {
	bs, cs := localRanks(3)
	g := NewGroup(3, func() {
		for _, c := range cs {
			c.Abort()
		}
	})
	defer g.Close()
	boom := errors.New("rank 1 ran out of memory")
	done := make(chan error)
	go func() {
		done <- g.Do(func(r int) error {
			if r == 1 {
				time.Sleep(50 * time.Millisecond)
				return boom
			}
			x, _ := bs[r].New(backend.F32, 8)
			err := cs[r].AllReduce(x)
			if !errors.Is(err, ErrAborted) {
				return fmt.Errorf("rank %d: %v, want ErrAborted", r, err)
			}
			return err
		})
	}()
	select {
	case err := <-done:
		if err != boom {
			t.Fatalf("Do returned %v, want the failure of rank 1", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the blocked ranks were not released")
	}
}
