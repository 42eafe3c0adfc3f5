package dist

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/minitron/minitron/backend"
)

// Comm is one rank's member of a communicator: collectives over float
// tensors of the rank's backend. Every rank calls the same collectives in
// the same order with the same sizes; a call returns when the rank's part
// is done (on a GPU: queued on its stream, in order with its kernels).
// *cuda.Comm (NCCL) implements it; NewLocal makes one for backends of one
// process.
type Comm interface {
	Rank() int
	Size() int
	// AllReduce replaces t on every rank by the sum over the ranks.
	AllReduce(t backend.Tensor) error
	// ReduceScatter sums the ranks' src (Size()×numel(dst) elements) and
	// leaves part r of the sum in rank r's dst, which may be that part of src.
	ReduceScatter(dst, src backend.Tensor) error
	// AllGather concatenates the ranks' src in rank order into every
	// rank's dst; src may be part Rank() of dst.
	AllGather(dst, src backend.Tensor) error
	// Broadcast copies rank root's t into every rank's t.
	Broadcast(t backend.Tensor, root int) error
	// SumFloat64 replaces v by its sum over the ranks and waits for it.
	SumFloat64(v []float64) error
	// Abort ends the communicator when a rank has failed, so that
	// collectives blocked in it fail; it may be called while another
	// goroutine is inside a collective. Close afterwards does nothing.
	Abort()
	Close() error
}

// ErrAborted is returned by the collectives of an aborted Local
// communicator.
var ErrAborted = errors.New("dist: the communicator was aborted (another rank failed)")

// local is the state shared by the ranks of a Local communicator.
type local struct {
	mu      sync.Mutex
	cond    *sync.Cond
	n       int
	arrived int
	gen     uint64
	aborted bool
	slots   [][]float32
	f64     [][]float64
	ops     []string
	// mismatch is set by the last rank to reach a barrier when the ranks
	// called different collectives; valid until the next barrier.
	mismatch string
}

// Local is a communicator of the backends of one process, through host
// memory: the ranks meet at a barrier and each computes its result from
// all ranks' values, added in rank order in float32 (float64 for
// SumFloat64), as the stand-in NCCL does. It serves the CPU backend and
// tests; GPUs use NCCL.
type Local struct {
	s    *local
	b    backend.Backend
	rank int
}

// NewLocal returns one member per backend, rank i on backends[i].
func NewLocal(backends []backend.Backend) []*Local {
	s := &local{n: len(backends), slots: make([][]float32, len(backends)), f64: make([][]float64, len(backends)), ops: make([]string, len(backends))}
	s.cond = sync.NewCond(&s.mu)
	out := make([]*Local, len(backends))
	for i, b := range backends {
		out[i] = &Local{s: s, b: b, rank: i}
	}
	return out
}

// Rank implements Comm.
func (c *Local) Rank() int { return c.rank }

// Size implements Comm.
func (c *Local) Size() int { return c.s.n }

// meet publishes this rank's op description and waits for every rank;
// it fails when the communicator is aborted or the ranks disagree.
func (c *Local) meet(op string) error {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aborted {
		return ErrAborted
	}
	s.ops[c.rank] = op
	gen := s.gen
	s.arrived++
	if s.arrived == s.n {
		s.mismatch = ""
		for r, o := range s.ops {
			if o != s.ops[0] {
				s.mismatch = fmt.Sprintf("dist: rank 0 called %s while rank %d called %s; every rank must call the same collectives", s.ops[0], r, o)
				break
			}
		}
		s.arrived = 0
		s.gen++
		s.cond.Broadcast()
	} else {
		for s.gen == gen && !s.aborted {
			s.cond.Wait()
		}
		if s.gen == gen { // aborted before every rank came
			return ErrAborted
		}
	}
	if s.mismatch != "" {
		return errors.New(s.mismatch)
	}
	return nil
}

// run is one collective: stage this rank's values, meet, compute, meet
// again (so the slots may be reused).
func (c *Local) run(op string, stage []float32, compute func(slots [][]float32) error) error {
	c.s.mu.Lock()
	c.s.slots[c.rank] = stage
	c.s.mu.Unlock()
	if err := c.meet(op); err != nil {
		return err
	}
	err := compute(c.s.slots)
	if merr := c.meet(""); err == nil {
		err = merr
	}
	return err
}

func sumInOrder(slots [][]float32, lo, hi int) []float32 {
	out := append([]float32(nil), slots[0][lo:hi]...)
	for _, s := range slots[1:] {
		for i := range out {
			out[i] += s[lo+i]
		}
	}
	return out
}

// AllReduce implements Comm.
func (c *Local) AllReduce(t backend.Tensor) error {
	v, err := c.b.ToFloat32(t)
	if err != nil {
		return err
	}
	return c.run(fmt.Sprintf("AllReduce of %d", len(v)), v, func(slots [][]float32) error {
		return c.b.Write(t, sumInOrder(slots, 0, len(v)))
	})
}

// ReduceScatter implements Comm.
func (c *Local) ReduceScatter(dst, src backend.Tensor) error {
	n := backend.Numel(dst.Shape())
	if backend.Numel(src.Shape()) != n*c.s.n {
		return fmt.Errorf("dist: ReduceScatter of %d elements into parts of %d for %d ranks", backend.Numel(src.Shape()), n, c.s.n)
	}
	v, err := c.b.ToFloat32(src)
	if err != nil {
		return err
	}
	return c.run(fmt.Sprintf("ReduceScatter of %d", n), v, func(slots [][]float32) error {
		return c.b.Write(dst, sumInOrder(slots, c.rank*n, (c.rank+1)*n))
	})
}

// AllGather implements Comm.
func (c *Local) AllGather(dst, src backend.Tensor) error {
	n := backend.Numel(src.Shape())
	if backend.Numel(dst.Shape()) != n*c.s.n {
		return fmt.Errorf("dist: AllGather of parts of %d into %d elements for %d ranks", n, backend.Numel(dst.Shape()), c.s.n)
	}
	v, err := c.b.ToFloat32(src)
	if err != nil {
		return err
	}
	return c.run(fmt.Sprintf("AllGather of %d", n), v, func(slots [][]float32) error {
		all := make([]float32, 0, n*c.s.n)
		for _, s := range slots {
			all = append(all, s...)
		}
		return c.b.Write(dst, all)
	})
}

// Broadcast implements Comm.
func (c *Local) Broadcast(t backend.Tensor, root int) error {
	if root < 0 || root >= c.s.n {
		return fmt.Errorf("dist: Broadcast from rank %d of %d", root, c.s.n)
	}
	v, err := c.b.ToFloat32(t)
	if err != nil {
		return err
	}
	return c.run(fmt.Sprintf("Broadcast of %d from %d", len(v), root), v, func(slots [][]float32) error {
		if c.rank == root {
			return nil
		}
		return c.b.Write(t, slots[root])
	})
}

// SumFloat64 implements Comm.
func (c *Local) SumFloat64(v []float64) error {
	c.s.mu.Lock()
	c.s.f64[c.rank] = append([]float64(nil), v...)
	c.s.mu.Unlock()
	if err := c.meet(fmt.Sprintf("SumFloat64 of %d", len(v))); err != nil {
		return err
	}
	for i := range v {
		v[i] = 0
		for _, s := range c.s.f64 {
			v[i] += s[i]
		}
	}
	return c.meet("")
}

// Abort implements Comm.
func (c *Local) Abort() {
	c.s.mu.Lock()
	c.s.aborted = true
	c.s.cond.Broadcast()
	c.s.mu.Unlock()
}

// Close implements Comm.
func (c *Local) Close() error { return nil }

// Group drives the GPUs of a process: one goroutine per local rank,
// locked to an OS thread for the group's life, so each GPU is always
// driven from the same thread and a collective that blocks one rank
// blocks only that thread.
type Group struct {
	jobs  []chan func()
	abort func()
	wg    sync.WaitGroup
}

// NewGroup starts n goroutines. abort, which may be nil, is called when a
// rank fails in Do, to release the ranks blocked in collectives (it
// aborts the communicators).
func NewGroup(n int, abort func()) *Group {
	g := &Group{abort: abort}
	for range n {
		ch := make(chan func())
		g.jobs = append(g.jobs, ch)
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for f := range ch {
				f()
			}
		}()
	}
	return g
}

// Size returns the number of local ranks.
func (g *Group) Size() int { return len(g.jobs) }

// Do runs f(i) for every local rank i on its goroutine and waits for all.
// When a rank fails, the others are released through abort and Do
// returns the first failure (not the errors the abort caused).
func (g *Group) Do(f func(i int) error) error {
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for i, ch := range g.jobs {
		wg.Add(1)
		ch <- func() {
			defer wg.Done()
			err := f(i)
			if err == nil {
				return
			}
			mu.Lock()
			isFirst := first == nil
			if isFirst {
				first = err
			}
			mu.Unlock()
			if isFirst && g.abort != nil {
				g.abort()
			}
		}
	}
	wg.Wait()
	return first
}

// Close stops the goroutines.
func (g *Group) Close() {
	for _, ch := range g.jobs {
		close(ch)
	}
	g.wg.Wait()
	g.jobs = nil
}

// LocalJob runs, in this process, a stand-in for a job of len(procs)
// processes of procs[p] ranks each: the ranks' backends come from
// newBackend and share one Local communicator, and run(p, g, bs, cs) is
// called for every process at once, on a goroutine of its own, with a
// Group g of its ranks and their backends and communicators. A process
// that fails aborts the communicator, so the others return too. It
// returns each process's error. Tests of multi-process runs use it.
func LocalJob(procs []int, newBackend func() backend.Backend, run func(p int, g *Group, bs []backend.Backend, cs []Comm) error) []error {
	var bs []backend.Backend
	for _, n := range procs {
		for range n {
			bs = append(bs, newBackend())
		}
	}
	locals := NewLocal(bs)
	abort := func() {
		for _, c := range locals {
			c.Abort()
		}
	}
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	first := 0
	for p, n := range procs {
		cs := make([]Comm, n)
		for i := range cs {
			cs[i] = locals[first+i]
		}
		pbs := bs[first : first+n]
		first += n
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := NewGroup(n, abort)
			defer g.Close()
			if errs[p] = run(p, g, pbs, cs); errs[p] != nil {
				abort()
			}
		}()
	}
	wg.Wait()
	return errs
}
