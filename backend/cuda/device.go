package cuda

import (
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"github.com/minitron/minitron/kernels"
)

// device is what the backend needs from a GPU: memory, copies, kernel
// launches and matrix products, all queued in order on one stream. The
// real one is gpu; tests use a fake that keeps memory on the host.
type device interface {
	info() deviceInfo
	malloc(bytes int64) (uintptr, error)
	free(p uintptr) error
	htod(dst uintptr, src unsafe.Pointer, bytes int64) error
	// dtoh waits for queued work, then copies.
	dtoh(dst unsafe.Pointer, src uintptr, bytes int64) error
	dtod(dst, src uintptr, bytes int64) error
	memset32(dst uintptr, v uint32, n int64) error
	launch(k string, grid, block [3]uint32, shared int, args []arg) error
	gemm(g gemmCall) error
	sync() error
	memInfo() (free, total int64, err error)
	// elapsed runs f (which queues work) and returns the device time it took.
	elapsed(f func() error) (time.Duration, error)
	// close releases the device's resources (not its allocations, which
	// the caller frees first).
	close() error
}

// arg is one packed kernel argument.
type arg struct {
	kind kernels.Kind
	bits uint64
}

func argPtr(p uintptr) arg             { return arg{kernels.Ptr, uint64(p)} }
func argInt(v int) arg                 { return arg{kernels.Int, uint64(uint32(int32(v)))} }
func argI64(v int) arg                 { return arg{kernels.Int64, uint64(int64(v))} }
func argF32(v float32) arg             { return arg{kernels.Float, uint64(mathFloat32bits(v))} }
func argU32(v uint32) arg              { return arg{kernels.Uint, uint64(v)} }
func mathFloat32bits(f float32) uint32 { return *(*uint32)(unsafe.Pointer(&f)) }

// checkLaunch compares a launch's block size and arguments with the
// kernel's declaration. A block above the kernel's __launch_bounds__ would
// fail on the GPU (CUDA_ERROR_INVALID_VALUE or, for lack of registers,
// CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES), never on the CPU stand-ins.
func checkLaunch(k kernels.Kernel, block [3]uint32, args []arg) error {
	if n := uint64(block[0]) * uint64(block[1]) * uint64(block[2]); k.MaxThreads > 0 && n > uint64(k.MaxThreads) {
		return fmt.Errorf("cuda: kernel %s (%s) is compiled for blocks of at most %d threads, launched with %v (this is a bug)", k.Name, k.File, k.MaxThreads, block)
	}
	if len(args) != len(k.Params) {
		return fmt.Errorf("cuda: kernel %s (%s) takes %d parameters, launched with %d (this is a bug)", k.Name, k.File, len(k.Params), len(args))
	}
	for i, p := range k.Params {
		if args[i].kind != p.Kind {
			return fmt.Errorf("cuda: kernel %s parameter %d (%s) is of kind %c, launched with %c (this is a bug)", k.Name, i, p.Name, p.Kind, args[i].kind)
		}
	}
	return nil
}

// argBlock holds a launch's argument values and the array of pointers to
// them that cuLaunchKernel reads, both pinned for the call.
type argBlock struct {
	vals []uint64
	ptrs []unsafe.Pointer
}

// pack fills the block from args, reusing its storage.
func (b *argBlock) pack(args []arg) {
	if cap(b.vals) < len(args) {
		b.vals = make([]uint64, len(args), max(len(args), 16))
		b.ptrs = make([]unsafe.Pointer, len(args), max(len(args), 16))
	}
	b.vals, b.ptrs = b.vals[:len(args)], b.ptrs[:len(args)]
	for i, a := range args {
		b.vals[i] = a.bits // little-endian: a 4-byte parameter reads the low half
		b.ptrs[i] = unsafe.Pointer(&b.vals[i])
	}
}

// gpu is the real device.
type gpu struct {
	drv    *driver
	blas   *cublas
	dev    int32
	ctx    uintptr // the retained primary context; 0 once released
	stream uintptr
	handle uintptr // cuBLAS
	module uintptr
	funcs  map[string]uintptr
	inf    deviceInfo
	args   argBlock
	pin    runtime.Pinner
	// stage is the pinned ring host-to-device copies go through (nil
	// when pinned memory was refused); made at the first copy.
	stage      *staging
	stageTried bool
}

// enter makes the context current on this OS thread and keeps the
// goroutine on the thread until the returned function runs: CUDA's
// current context is per thread, and goroutines move between threads.
func (g *gpu) enter() (func(), error) {
	lockThread()
	if err := g.drv.check("cuCtxSetCurrent", g.drv.cuCtxSetCurrent.call(g.ctx)); err != nil {
		unlockThread()
		return nil, err
	}
	return unlockThread, nil
}

// lockThread and unlockThread pin the goroutine to its OS thread (tests
// count them to check that context-bound calls happen inside enter).
var lockThread, unlockThread = runtime.LockOSThread, runtime.UnlockOSThread

// in runs f with the context current on the calling thread.
func (g *gpu) in(f func() error) error {
	leave, err := g.enter()
	if err != nil {
		return err
	}
	defer leave()
	return f()
}

// close destroys what setup made (the cuBLAS handle, the module, the
// staging ring, the stream) and releases the primary context; it is safe on a partly set up
// gpu and a second time. It returns the first error.
func (g *gpu) close() error {
	if g.ctx == 0 {
		return nil
	}
	d := g.drv
	var errs []error
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	keep(g.in(func() error {
		if g.handle != 0 {
			keep(g.blas.check("cublasDestroy_v2", g.blas.destroy.call(g.handle)))
			g.handle = 0
		}
		if g.module != 0 {
			keep(d.check("cuModuleUnload", d.cuModuleUnload.call(g.module)))
			g.module, g.funcs = 0, nil
		}
		if g.stage != nil {
			if g.stream != 0 { // copies from the ring may still be queued
				keep(d.check("cuStreamSynchronize", d.cuStreamSynchronize.call(g.stream)))
			}
			g.stage.free(d)
			g.stage = nil
		}
		if g.stream != 0 {
			keep(d.check("cuStreamDestroy_v2", d.cuStreamDestroy.call(g.stream)))
			g.stream = 0
		}
		return nil
	}))
	keep(d.check("cuDevicePrimaryCtxRelease_v2", d.cuDevicePrimaryCtxRelease.call(uintptr(g.dev))))
	g.ctx = 0
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

func (g *gpu) info() deviceInfo { return g.inf }

func (g *gpu) malloc(bytes int64) (uintptr, error) {
	leave, err := g.enter()
	if err != nil {
		return 0, err
	}
	defer leave()
	var p uintptr
	return p, g.drv.check("cuMemAlloc_v2", g.drv.cuMemAlloc.call(uintptr(unsafe.Pointer(&p)), uintptr(bytes)))
}

func (g *gpu) free(p uintptr) error {
	leave, err := g.enter()
	if err != nil {
		return err
	}
	defer leave()
	return g.drv.check("cuMemFree_v2", g.drv.cuMemFree.call(p))
}

func (g *gpu) htod(dst uintptr, src unsafe.Pointer, bytes int64) error {
	if bytes == 0 {
		return nil
	}
	leave, err := g.enter()
	if err != nil {
		return err
	}
	defer leave()
	if ok, err := g.htodStaged(dst, src, bytes); ok || err != nil {
		return err
	}
	// From pageable memory the copy is staged before the call returns, so
	// src may be reused afterwards.
	return g.drv.check("cuMemcpyHtoDAsync_v2", g.drv.cuMemcpyHtoDAsync.call(dst, uintptr(src), uintptr(bytes), g.stream))
}

func (g *gpu) dtoh(dst unsafe.Pointer, src uintptr, bytes int64) error {
	if bytes == 0 {
		return g.sync()
	}
	leave, err := g.enter()
	if err != nil {
		return err
	}
	defer leave()
	if err := g.drv.check("cuMemcpyDtoHAsync_v2", g.drv.cuMemcpyDtoHAsync.call(uintptr(dst), src, uintptr(bytes), g.stream)); err != nil {
		return err
	}
	return g.drv.check("cuStreamSynchronize", g.drv.cuStreamSynchronize.call(g.stream))
}

func (g *gpu) dtod(dst, src uintptr, bytes int64) error {
	if bytes == 0 {
		return nil
	}
	leave, err := g.enter()
	if err != nil {
		return err
	}
	defer leave()
	return g.drv.check("cuMemcpyDtoDAsync_v2", g.drv.cuMemcpyDtoDAsync.call(dst, src, uintptr(bytes), g.stream))
}

func (g *gpu) memset32(dst uintptr, v uint32, n int64) error {
	if n == 0 {
		return nil
	}
	leave, err := g.enter()
	if err != nil {
		return err
	}
	defer leave()
	return g.drv.check("cuMemsetD32Async", g.drv.cuMemsetD32Async.call(dst, uintptr(v), uintptr(n), g.stream))
}

func (g *gpu) launch(k string, grid, block [3]uint32, shared int, args []arg) error {
	f, ok := g.funcs[k]
	if !ok {
		return fmt.Errorf("cuda: kernel %s is not in the compiled module (this is a bug)", k)
	}
	leave, err := g.enter()
	if err != nil {
		return err
	}
	defer leave()
	g.args.pack(args)
	var params uintptr
	if len(args) > 0 {
		g.pin.Pin(&g.args.vals[0])
		g.pin.Pin(&g.args.ptrs[0])
		params = uintptr(unsafe.Pointer(&g.args.ptrs[0]))
	}
	status := g.drv.cuLaunchKernel.call(f, uintptr(grid[0]), uintptr(grid[1]), uintptr(grid[2]),
		uintptr(block[0]), uintptr(block[1]), uintptr(block[2]), uintptr(shared), g.stream, params, 0)
	g.pin.Unpin()
	if err := g.drv.check("cuLaunchKernel", status); err != nil {
		return fmt.Errorf("%w (kernel %s, grid %v, block %v, %d bytes shared)", err, k, grid, block, shared)
	}
	return nil
}

func (g *gpu) gemm(c gemmCall) error {
	leave, err := g.enter()
	if err != nil {
		return err
	}
	defer leave()
	return g.blas.gemm(g.handle, c)
}

func (g *gpu) sync() error {
	leave, err := g.enter()
	if err != nil {
		return err
	}
	defer leave()
	if err := g.drv.check("cuStreamSynchronize", g.drv.cuStreamSynchronize.call(g.stream)); err != nil {
		return err
	}
	if g.stage != nil {
		g.stage.ring.idle()
	}
	return nil
}

func (g *gpu) memInfo() (free, total int64, err error) {
	leave, err := g.enter()
	if err != nil {
		return 0, 0, err
	}
	defer leave()
	var f, t uint64
	err = g.drv.check("cuMemGetInfo_v2", g.drv.cuMemGetInfo.call(uintptr(unsafe.Pointer(&f)), uintptr(unsafe.Pointer(&t))))
	return int64(f), int64(t), err
}

// elapsed runs f and returns the GPU time between two events recorded
// around it on the stream (the time the device spent, not the host).
func (g *gpu) elapsed(f func() error) (time.Duration, error) {
	var start, stop uintptr
	d := g.drv
	// The events are destroyed with the context current, like every call.
	defer g.in(func() error {
		for _, e := range []uintptr{start, stop} {
			if e != 0 {
				d.cuEventDestroy.call(e)
			}
		}
		return nil
	})
	err := g.in(func() error {
		if err := d.check("cuEventCreate", d.cuEventCreate.call(uintptr(unsafe.Pointer(&start)), 0)); err != nil {
			return err
		}
		if err := d.check("cuEventCreate", d.cuEventCreate.call(uintptr(unsafe.Pointer(&stop)), 0)); err != nil {
			return err
		}
		return d.check("cuEventRecord", d.cuEventRecord.call(start, g.stream))
	})
	if err != nil {
		return 0, err
	}
	if err := f(); err != nil {
		return 0, err
	}
	var ms float32
	err = g.in(func() error {
		if err := d.check("cuEventRecord", d.cuEventRecord.call(stop, g.stream)); err != nil {
			return err
		}
		if err := d.check("cuEventSynchronize", d.cuEventSynchronize.call(stop)); err != nil {
			return err
		}
		return d.check("cuEventElapsedTime", d.cuEventElapsedTime.call(uintptr(unsafe.Pointer(&ms)), start, stop))
	})
	if err != nil {
		return 0, err
	}
	return time.Duration(float64(ms) * float64(time.Millisecond)), nil
}
