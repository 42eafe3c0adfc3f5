// Package cpu is the float32 reference backend. Every op is exact float32
// arithmetic (reductions accumulate in float64 where the row is long), parallel
// over rows across cores; matrix products run on package gemm.
package cpu

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu/gemm"
)

// Tensor is a CPU tensor: float data is []float32, int data []int32.
type Tensor struct {
	shape []int
	dt    backend.DType
	f     []float32
	i     []int32
}

// Shape returns the dimensions.
func (t *Tensor) Shape() []int { return t.shape }

// DType returns F32 or I32.
func (t *Tensor) DType() backend.DType { return t.dt }

// Float32 exposes the storage of a float tensor (CPU only; nil otherwise).
func (t *Tensor) Float32() []float32 { return t.f }

// Int32 exposes the storage of an int tensor (CPU only; nil otherwise).
func (t *Tensor) Int32() []int32 { return t.i }

// Backend is the CPU backend. The zero value is not usable; call New.
type Backend struct {
	threads int
}

// New returns a CPU backend using all of GOMAXPROCS.
func New() *Backend { return &Backend{threads: runtime.GOMAXPROCS(0)} }

var _ backend.Backend = (*Backend)(nil)

// Name returns "cpu" and the matmul kernel in use.
func (b *Backend) Name() string { return "cpu (" + gemm.Kernel() + ")" }

// FloatDType is F32.
func (b *Backend) FloatDType() backend.DType { return backend.F32 }

func checkShape(shape []int) error {
	for _, d := range shape {
		if d < 0 {
			return fmt.Errorf("cpu: negative dimension in shape %v", shape)
		}
	}
	return nil
}

// New makes a zero-filled tensor.
func (b *Backend) New(dt backend.DType, shape ...int) (backend.Tensor, error) {
	if err := checkShape(shape); err != nil {
		return nil, err
	}
	n := backend.Numel(shape)
	switch {
	case dt == backend.F32 || dt == backend.BF16: // bf16 is stored as float32 here
		return &Tensor{shape: clone(shape), dt: backend.F32, f: make([]float32, n)}, nil
	case dt == backend.I32:
		return &Tensor{shape: clone(shape), dt: backend.I32, i: make([]int32, n)}, nil
	}
	return nil, fmt.Errorf("cpu: cannot make a tensor of dtype %v (use F32, BF16 or I32)", dt)
}

// FromFloat32 wraps data (no copy).
func (b *Backend) FromFloat32(data []float32, shape ...int) (backend.Tensor, error) {
	if err := checkShape(shape); err != nil {
		return nil, err
	}
	if n := backend.Numel(shape); n != len(data) {
		return nil, fmt.Errorf("cpu: %d values for shape %v (%d elements)", len(data), shape, n)
	}
	return &Tensor{shape: clone(shape), dt: backend.F32, f: data}, nil
}

// FromInt32 wraps data (no copy).
func (b *Backend) FromInt32(data []int32, shape ...int) (backend.Tensor, error) {
	if err := checkShape(shape); err != nil {
		return nil, err
	}
	if n := backend.Numel(shape); n != len(data) {
		return nil, fmt.Errorf("cpu: %d values for shape %v (%d elements)", len(data), shape, n)
	}
	return &Tensor{shape: clone(shape), dt: backend.I32, i: data}, nil
}

// Write copies data into a float tensor.
func (b *Backend) Write(t backend.Tensor, data []float32) error {
	f, err := floats("Write", t)
	if err != nil {
		return err
	}
	if len(data) != len(f) {
		return fmt.Errorf("cpu: Write of %d values into a tensor of shape %v", len(data), t.Shape())
	}
	copy(f, data)
	return nil
}

// ToFloat32 copies a float tensor out.
func (b *Backend) ToFloat32(t backend.Tensor) ([]float32, error) {
	f, err := floats("ToFloat32", t)
	if err != nil {
		return nil, err
	}
	return clone(f), nil
}

// ToInt32 copies an int tensor out.
func (b *Backend) ToInt32(t backend.Tensor) ([]int32, error) {
	i, err := ints("ToInt32", t)
	if err != nil {
		return nil, err
	}
	return clone(i), nil
}

// View shares storage with t from offset on.
func (b *Backend) View(t backend.Tensor, offset int, shape ...int) (backend.Tensor, error) {
	ct, ok := t.(*Tensor)
	if !ok {
		return nil, fmt.Errorf("cpu: View of a %T, not a CPU tensor", t)
	}
	if err := checkShape(shape); err != nil {
		return nil, err
	}
	n := backend.Numel(shape)
	size := max(len(ct.f), len(ct.i))
	if offset < 0 || offset+n > size {
		return nil, fmt.Errorf("cpu: view [%d, %d) outside a tensor of %d elements", offset, offset+n, size)
	}
	v := &Tensor{shape: clone(shape), dt: ct.dt}
	if ct.dt == backend.I32 {
		v.i = ct.i[offset : offset+n : offset+n]
	} else {
		v.f = ct.f[offset : offset+n : offset+n]
	}
	return v, nil
}

// Copy copies src into dst.
func (b *Backend) Copy(dst, src backend.Tensor) error {
	d, ok1 := dst.(*Tensor)
	s, ok2 := src.(*Tensor)
	if !ok1 || !ok2 || d.dt != s.dt || max(len(d.f), len(d.i)) != max(len(s.f), len(s.i)) {
		return fmt.Errorf("cpu: Copy %v %v into %v %v", src.DType(), src.Shape(), dst.DType(), dst.Shape())
	}
	copy(d.f, s.f)
	copy(d.i, s.i)
	return nil
}

// Fill sets every element to v.
func (b *Backend) Fill(t backend.Tensor, v float32) error {
	f, err := floats("Fill", t)
	if err != nil {
		return err
	}
	for i := range f {
		f[i] = v
	}
	return nil
}

// Free drops the storage.
func (b *Backend) Free(t backend.Tensor) {
	if ct, ok := t.(*Tensor); ok {
		ct.f, ct.i = nil, nil
	}
}

// Sync has nothing to wait for.
func (b *Backend) Sync() error { return nil }

func clone[T any](s []T) []T { return append([]T(nil), s...) }

func floats(op string, t backend.Tensor) ([]float32, error) {
	if t == nil {
		return nil, fmt.Errorf("cpu: %s: missing tensor", op)
	}
	ct, ok := t.(*Tensor)
	if !ok {
		return nil, fmt.Errorf("cpu: %s: %T is not a CPU tensor", op, t)
	}
	if ct.dt != backend.F32 {
		return nil, fmt.Errorf("cpu: %s: tensor %v is %v, want a float tensor", op, ct.shape, ct.dt)
	}
	return ct.f, nil
}

func ints(op string, t backend.Tensor) ([]int32, error) {
	if t == nil {
		return nil, fmt.Errorf("cpu: %s: missing tensor", op)
	}
	ct, ok := t.(*Tensor)
	if !ok {
		return nil, fmt.Errorf("cpu: %s: %T is not a CPU tensor", op, t)
	}
	if ct.dt != backend.I32 {
		return nil, fmt.Errorf("cpu: %s: tensor %v is %v, want I32", op, ct.shape, ct.dt)
	}
	return ct.i, nil
}

// mat returns the storage of a float tensor seen as a matrix [rows, cols].
func mat(op, what string, t backend.Tensor, rows, cols int) ([]float32, error) {
	f, err := floats(op, t)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, what)
	}
	vector := len(t.Shape()) == 1 && (rows == 1 || cols == 1) && len(f) == rows*cols
	if !vector && (backend.Rows(t) != rows || backend.Cols(t) != cols) {
		return nil, backend.ShapeError(op, what, t.Shape(), rows, cols)
	}
	return f, nil
}

// mats checks every argument of an op and returns their storage in order
// (nil for an absent optional one).
func mats(op string, args ...backend.Arg) ([][]float32, error) {
	out := make([][]float32, len(args))
	for i, a := range args {
		if a.Optional && a.T == nil {
			continue
		}
		f, err := mat(op, a.What, a.T, a.Rows, a.Cols)
		if err != nil {
			return nil, err
		}
		out[i] = f
	}
	return out, nil
}

// parallelRows runs f over [0,n) split into contiguous chunks across cores;
// work is the approximate cost of one row, used to stay serial on small jobs.
func (b *Backend) parallelRows(n, work int, f func(lo, hi int)) {
	workers := b.threads
	if n*work < 1<<15 || workers <= 1 {
		f(0, n)
		return
	}
	workers = min(workers, n)
	var wg sync.WaitGroup
	for w := 1; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(w*n/workers, (w+1)*n/workers)
		}()
	}
	f(0, n/workers)
	wg.Wait()
}

// reduceChunk is the number of rows each partial sum of parallelReduce
// covers. Fixing it (rather than splitting by core count) makes results
// identical whatever the number of threads, which bit-exact resumption of
// training on another machine relies on.
const reduceChunk = 32

// parallelReduce is parallelRows for ops that accumulate into vectors of
// size width (parameter gradients): rows are cut into fixed chunks, each
// chunk sums into its own buffer in float64, and the buffers are added in
// chunk order, so results do not depend on scheduling or thread count.
func (b *Backend) parallelReduce(n, work, width int, f func(lo, hi int, acc []float64), out ...[]float32) {
	chunks := (n + reduceChunk - 1) / reduceChunk
	parts := make([][]float64, chunks)
	run := func(c int) {
		parts[c] = make([]float64, width*len(out))
		f(c*reduceChunk, min((c+1)*reduceChunk, n), parts[c])
	}
	if n*work < 1<<15 || b.threads <= 1 {
		for c := range chunks {
			run(c)
		}
	} else {
		runTasks(b, chunks, func() struct{} { return struct{}{} }, func(c int, _ struct{}) { run(c) })
	}
	for k, o := range out {
		if o == nil {
			continue
		}
		for j := range width {
			var s float64
			for _, p := range parts {
				s += p[k*width+j]
			}
			o[j] += float32(s)
		}
	}
}
