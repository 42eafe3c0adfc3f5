//go:build linux

package cuda

import (
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"github.com/ebitengine/purego"

	"github.com/minitron/minitron/backend"
)

// These tests bind the backend's C calls to Go functions made callable
// from C (purego.NewCallback): fake libcuda, NVRTC and cuBLAS that count
// what is created and destroyed, fail a chosen call, and return statuses
// with garbage in the upper 32 bits of the return register (C's int
// return leaves them undefined). They run the real gpu and nvrtc code.

// junk is set in the upper half of every status the fakes return.
const junk = uintptr(0xdead_beef) << 32

// clib is the state of the fake libraries; one test at a time uses it.
type clib struct {
	mu       sync.Mutex
	fail     map[string]int // call name → status to return
	live     map[string]int // resource kind → count alive
	blocks   map[uintptr][]byte
	ctx      map[int]uintptr // current context by OS thread
	outside  []string        // context-bound calls made outside gpu.enter
	locked   int             // lockThread depth (tests replace lockThread)
	options  []string        // what nvrtcCompileProgram read
	nextID   uintptr
	progLog  string
	gcInCall bool // collect garbage inside nvrtcCompileProgram
}

var (
	clibOnce  sync.Once
	clibState *clib
	clibProcs map[string]proc
)

func newCLib(t *testing.T) *clib {
	t.Helper()
	clibOnce.Do(makeCLibProcs)
	c := &clib{fail: map[string]int{}, live: map[string]int{}, blocks: map[uintptr][]byte{}, ctx: map[int]uintptr{}, nextID: 0x1000}
	clibState = c
	lock, unlock := lockThread, unlockThread
	lockThread = func() { runtime.LockOSThread(); c.mu.Lock(); c.locked++; c.mu.Unlock() }
	unlockThread = func() { c.mu.Lock(); c.locked--; c.mu.Unlock(); runtime.UnlockOSThread() }
	t.Cleanup(func() { lockThread, unlockThread = lock, unlock; clibState = nil })
	return c
}

// status returns what call should return: 0 or the injected failure,
// with junk above.
func (c *clib) status(call string) uintptr {
	return junk | uintptr(uint32(int32(c.fail[call])))
}

func (c *clib) id() uintptr { c.nextID += 0x10; return c.nextID }

// inContext records a context-bound call made while the goroutine is not
// pinned to its thread by gpu.enter, or without the context current.
func (c *clib) inContext(call string) {
	if c.locked == 0 || c.ctx[gettid()] == 0 {
		c.outside = append(c.outside, call)
	}
}

// block returns the fake device memory at p.
func (c *clib) block(p uintptr, n uintptr) []byte {
	for base, b := range c.blocks {
		if p >= base && p+n <= base+uintptr(len(b)) {
			return b[p-base : p-base+n]
		}
	}
	panic(fmt.Sprintf("fake: access [%#x, +%d) outside every allocation", p, n))
}

// gettid identifies the calling OS thread.
func gettid() int { return syscall.Gettid() }

// errorNames are the fake driver's names of statuses (C strings that
// outlive the call).
var errorNames = map[int32][]byte{12345: cstr("CUDA_ERROR_FAKE_12345"), 700: cstr("CUDA_ERROR_ILLEGAL_ADDRESS")}

// memCall runs f, a context-bound call on fake device memory, under the
// fakes' lock and returns the call's status.
func memCall(call string, f func(c *clib)) uintptr {
	c := clibState
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inContext(call)
	f(c)
	return c.status(call)
}

func makeCLibProcs() {
	st := func() *clib { return clibState }
	// create and destroy make a call that creates a resource of kind
	// (writing its handle to *out) and one that destroys it.
	create := func(call, kind string, bound bool) func(out unsafe.Pointer) uintptr {
		return func(out unsafe.Pointer) uintptr {
			c := st()
			c.mu.Lock()
			defer c.mu.Unlock()
			if bound {
				c.inContext(call)
			}
			if s := c.status(call); uint32(s) != 0 {
				return s
			}
			c.live[kind]++
			*(*uintptr)(out) = c.id()
			return c.status(call)
		}
	}
	destroy := func(call, kind string, bound bool) func(h uintptr) uintptr {
		return func(h uintptr) uintptr {
			c := st()
			c.mu.Lock()
			defer c.mu.Unlock()
			if bound {
				c.inContext(call)
			}
			c.live[kind]--
			return c.status(call)
		}
	}
	ok := func(call string, bound bool) func() uintptr {
		return func() uintptr {
			c := st()
			c.mu.Lock()
			defer c.mu.Unlock()
			if bound {
				c.inContext(call)
			}
			return c.status(call)
		}
	}
	// alloc and free make a call that allocates a block of kind (device or
	// pinned host memory, kept alive in c.blocks like C memory) and one that
	// frees it.
	alloc := func(call, kind string) func(p *uintptr, n uintptr) uintptr {
		return func(p *uintptr, n uintptr) uintptr {
			c := st()
			c.mu.Lock()
			defer c.mu.Unlock()
			c.inContext(call)
			if s := c.status(call); uint32(s) != 0 {
				return s
			}
			b := make([]byte, n)
			*p = uintptr(unsafe.Pointer(&b[0]))
			c.blocks[*p] = b
			c.live[kind]++
			return junk
		}
	}
	free := func(call, kind string) func(p uintptr) uintptr {
		return func(p uintptr) uintptr {
			return memCall(call, func(c *clib) { delete(c.blocks, p); c.live[kind]-- })
		}
	}
	fns := map[string]any{
		"cuInit":             func(flags uintptr) uintptr { return st().status("cuInit") },
		"cuDriverGetVersion": func(v *int32) uintptr { *v = 13000; return st().status("cuDriverGetVersion") },
		"cuGetErrorName": func(status uintptr, name **byte) uintptr {
			*name = &errorNames[int32(status)][0]
			return junk
		},
		"cuDeviceGetCount": func(n *int32) uintptr { *n = 1; return st().status("cuDeviceGetCount") },
		"cuDeviceGet":      func(d *int32, ordinal uintptr) uintptr { *d = int32(ordinal); return st().status("cuDeviceGet") },
		"cuDeviceGetName": func(name *byte, n uintptr, dev uintptr) uintptr {
			copy(unsafe.Slice(name, n), "Fake GPU\x00")
			return st().status("cuDeviceGetName")
		},
		"cuDeviceGetAttribute": func(v *int32, attr, dev uintptr) uintptr {
			*v = map[uintptr]int32{attrCCMajor: 9, attrCCMinor: 0, attrMultiprocessors: 132, attrMaxSharedOptin: 227 << 10}[attr]
			return st().status("cuDeviceGetAttribute")
		},
		"cuDeviceTotalMem_v2": func(v *uint64, dev uintptr) uintptr { *v = 141 << 30; return st().status("cuDeviceTotalMem_v2") },
		"cuDevicePrimaryCtxRetain": func(ctx unsafe.Pointer, dev uintptr) uintptr {
			return create("cuDevicePrimaryCtxRetain", "context", false)(ctx)
		},
		"cuDevicePrimaryCtxRelease_v2": destroy("cuDevicePrimaryCtxRelease_v2", "context", false),
		"cuCtxSetCurrent": func(ctx uintptr) uintptr {
			c := st()
			c.mu.Lock()
			defer c.mu.Unlock()
			c.ctx[gettid()] = ctx
			return c.status("cuCtxSetCurrent")
		},
		"cuStreamCreate":     func(s unsafe.Pointer, flags uintptr) uintptr { return create("cuStreamCreate", "stream", true)(s) },
		"cuStreamDestroy_v2": destroy("cuStreamDestroy_v2", "stream", true),
		"cuStreamSynchronize": func(s uintptr) uintptr {
			return ok("cuStreamSynchronize", true)()
		},
		"cuModuleLoadData": func(m unsafe.Pointer, img *byte) uintptr { return create("cuModuleLoadData", "module", true)(m) },
		"cuModuleUnload":   destroy("cuModuleUnload", "module", true),
		"cuModuleGetFunction": func(f unsafe.Pointer, m uintptr, name *byte) uintptr {
			return create("cuModuleGetFunction", "function", true)(f)
		},
		"cuFuncSetAttribute": func(f, attr, v uintptr) uintptr { return ok("cuFuncSetAttribute", true)() },
		"cuMemAlloc_v2":      alloc("cuMemAlloc_v2", "memory"),
		"cuMemFree_v2":       free("cuMemFree_v2", "memory"),
		"cuMemAllocHost_v2":  alloc("cuMemAllocHost_v2", "pinned"),
		"cuMemFreeHost":      free("cuMemFreeHost", "pinned"),
		"cuMemsetD32Async": func(p, v, n, s uintptr) uintptr {
			return memCall("cuMemsetD32Async", func(c *clib) {
				b := c.block(p, 4*n)
				for i := range n {
					*(*uint32)(unsafe.Pointer(&b[4*i])) = uint32(v)
				}
			})
		},
		"cuMemcpyDtoHAsync_v2": func(dst *byte, src, n, s uintptr) uintptr {
			return memCall("cuMemcpyDtoHAsync_v2", func(c *clib) { copy(unsafe.Slice(dst, n), c.block(src, n)) })
		},
		"cuMemcpyHtoDAsync_v2": func(dst uintptr, src *byte, n, s uintptr) uintptr {
			return memCall("cuMemcpyHtoDAsync_v2", func(c *clib) { copy(c.block(dst, n), unsafe.Slice(src, n)) })
		},
		"cuEventCreate":      func(e unsafe.Pointer, flags uintptr) uintptr { return create("cuEventCreate", "event", true)(e) },
		"cuEventDestroy_v2":  destroy("cuEventDestroy_v2", "event", true),
		"cuEventRecord":      func(e, s uintptr) uintptr { return ok("cuEventRecord", true)() },
		"cuEventSynchronize": func(e uintptr) uintptr { return ok("cuEventSynchronize", true)() },
		"cuEventElapsedTime_v2": func(ms *float32, a, b uintptr) uintptr {
			*ms = 1.5
			return ok("cuEventElapsedTime_v2", true)()
		},
		"cublasCreate_v2":    func(h unsafe.Pointer) uintptr { return create("cublasCreate_v2", "cublas", true)(h) },
		"cublasDestroy_v2":   destroy("cublasDestroy_v2", "cublas", true),
		"cublasSetStream_v2": func(h, s uintptr) uintptr { return ok("cublasSetStream_v2", true)() },

		"nvrtcVersion": func(major, minor *int32) uintptr { *major, *minor = 12, 4; return junk },
		"nvrtcCreateProgram": func(prog *uintptr, src, name *byte, n uintptr, headers, includes unsafe.Pointer) uintptr {
			*prog = 7
			return junk
		},
		"nvrtcCompileProgram": func(prog uintptr, n int32, opts **byte) uintptr {
			c := st()
			if c.gcInCall {
				// Collect, then allocate over what was freed: option
				// strings nothing keeps alive are overwritten.
				var keep [][]byte
				for range 3 {
					runtime.GC()
					for n := 1; n <= 48; n++ {
						for range 2000 {
							b := make([]byte, n)
							for i := range b {
								b[i] = 'X'
							}
							keep = append(keep, b)
						}
					}
				}
				runtime.KeepAlive(keep)
			}
			for _, p := range unsafe.Slice(opts, n) {
				c.options = append(c.options, cString(p))
			}
			return c.status("nvrtcCompileProgram")
		},
		"nvrtcDestroyProgram": func(prog *uintptr) uintptr { *prog = 0; return junk },
		"nvrtcGetProgramLogSize": func(prog uintptr, n *uintptr) uintptr {
			*n = uintptr(len(st().progLog) + 1)
			return junk
		},
		"nvrtcGetProgramLog": func(prog uintptr, out *byte) uintptr {
			copy(unsafe.Slice(out, len(st().progLog)+1), st().progLog+"\x00")
			return junk
		},
		"nvrtcGetCUBINSize": func(prog uintptr, n *uintptr) uintptr { *n = 5; return junk },
		"nvrtcGetCUBIN":     func(prog uintptr, out *byte) uintptr { copy(unsafe.Slice(out, 5), "CUBIN"); return junk },
		"nvrtcGetPTXSize":   func(prog uintptr, n *uintptr) uintptr { *n = 3; return junk },
		"nvrtcGetPTX":       func(prog uintptr, out *byte) uintptr { copy(unsafe.Slice(out, 3), "PTX"); return junk },
	}
	clibProcs = map[string]proc{}
	for name, f := range fns {
		clibProcs[name] = proc{name: name, addr: purego.NewCallback(f)}
	}
}

// bindFake fills the procs of a binding struct from the fakes, as
// library.bind would from a real library.
func bindFake(t *testing.T, procs map[string]*proc) {
	t.Helper()
	for name, p := range procs {
		f, ok := clibProcs[name]
		if !ok {
			t.Fatalf("no fake for %s", name)
		}
		*p = f
	}
}

func fakeDriver(t *testing.T) *driver {
	d := &driver{lib: &library{what: "the CUDA driver", path: "fake"}}
	bindFake(t, map[string]*proc{
		"cuInit": &d.cuInit, "cuDriverGetVersion": &d.cuDriverGetVersion, "cuGetErrorName": &d.cuGetErrorName,
		"cuDeviceGetCount": &d.cuDeviceGetCount, "cuDeviceGet": &d.cuDeviceGet, "cuDeviceGetName": &d.cuDeviceGetName,
		"cuDeviceGetAttribute": &d.cuDeviceGetAttribute, "cuDeviceTotalMem_v2": &d.cuDeviceTotalMem,
		"cuDevicePrimaryCtxRetain": &d.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRelease_v2": &d.cuDevicePrimaryCtxRelease,
		"cuCtxSetCurrent": &d.cuCtxSetCurrent, "cuMemAlloc_v2": &d.cuMemAlloc, "cuMemFree_v2": &d.cuMemFree,
		"cuMemcpyHtoDAsync_v2": &d.cuMemcpyHtoDAsync, "cuMemcpyDtoHAsync_v2": &d.cuMemcpyDtoHAsync, "cuMemsetD32Async": &d.cuMemsetD32Async,
		"cuStreamCreate": &d.cuStreamCreate, "cuStreamSynchronize": &d.cuStreamSynchronize, "cuStreamDestroy_v2": &d.cuStreamDestroy,
		"cuEventCreate": &d.cuEventCreate, "cuEventRecord": &d.cuEventRecord, "cuEventSynchronize": &d.cuEventSynchronize,
		"cuEventDestroy_v2": &d.cuEventDestroy, "cuEventElapsedTime_v2": &d.cuEventElapsedTime,
		"cuModuleLoadData": &d.cuModuleLoadData, "cuModuleGetFunction": &d.cuModuleGetFunction, "cuModuleUnload": &d.cuModuleUnload,
		"cuFuncSetAttribute": &d.cuFuncSetAttribute, "cuMemAllocHost_v2": &d.cuMemAllocHost, "cuMemFreeHost": &d.cuMemFreeHost,
	})
	return d
}

func fakeCuBLAS(t *testing.T) *cublas {
	c := &cublas{lib: &library{what: "cuBLAS", path: "fake"}}
	bindFake(t, map[string]*proc{"cublasCreate_v2": &c.create, "cublasDestroy_v2": &c.destroy, "cublasSetStream_v2": &c.setStream})
	return c
}

func fakeNVRTC(t *testing.T) *nvrtc {
	n := &nvrtc{lib: &library{what: "NVRTC", path: "fake"}}
	bindFake(t, map[string]*proc{
		"nvrtcVersion": &n.version, "nvrtcCreateProgram": &n.create, "nvrtcCompileProgram": &n.compile,
		"nvrtcDestroyProgram": &n.destroy, "nvrtcGetProgramLogSize": &n.logSize, "nvrtcGetProgramLog": &n.log,
		"nvrtcGetCUBINSize": &n.cubinSize, "nvrtcGetCUBIN": &n.cubin, "nvrtcGetPTXSize": &n.ptxSize, "nvrtcGetPTX": &n.ptx,
	})
	return n
}

// leaks lists the resources of the fakes still alive.
func (c *clib) leaks() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for k, n := range c.live {
		if n != 0 && k != "function" {
			out = append(out, fmt.Sprintf("%d %s", n, k))
		}
	}
	sort.Strings(out)
	return out
}

// Every failure in Open releases what Open had made: the primary
// context, the stream, the cuBLAS handle, the module and memory.
func TestOpenReleasesOnFailure(t *testing.T) {
	for _, call := range []string{"cuStreamCreate", "cublasCreate_v2", "cublasSetStream_v2", "nvrtcCompileProgram",
		"cuModuleLoadData", "cuModuleGetFunction", "cuFuncSetAttribute", "cuMemAlloc_v2", "cuMemsetD32Async"} {
		t.Run(call, func(t *testing.T) {
			c := newCLib(t)
			c.fail[call] = 1
			if call == "nvrtcCompileProgram" {
				c.fail[call] = 11 // NVRTC_ERROR_INTERNAL_ERROR
			}
			_, err := open(fakeDriver(t), fakeNVRTC(t), fakeCuBLAS(t), Options{CacheDir: t.TempDir()})
			if err == nil {
				t.Fatal("Open succeeded")
			}
			if l := c.leaks(); len(l) > 0 {
				t.Errorf("after %v: left %v", err, l)
			}
			if len(c.outside) > 0 {
				t.Errorf("calls outside the context: %v", c.outside)
			}
		})
	}
}

// Close frees every allocation and releases what Open made; a second
// Close does nothing; a closed backend refuses work.
func TestClose(t *testing.T) {
	c := newCLib(t)
	b, err := open(fakeDriver(t), fakeNVRTC(t), fakeCuBLAS(t), Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.Name(), "Fake GPU") || !strings.Contains(b.Name(), "sm_90") {
		t.Errorf("name %q", b.Name())
	}
	x, err := b.FromFloat32([]float32{1, 2, 3}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.ToFloat32(x); err != nil || fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("round trip %v %v", got, err)
	}
	y, _ := b.New(backend.F32, 1000)
	b.Free(y) // cached by the allocator
	if c.live["memory"] != 4 {
		t.Fatalf("%d blocks allocated, want 4 (2 internal, x, y)", c.live["memory"])
	}
	// DeviceTime records and destroys its events inside the context.
	d, err := b.DeviceTime(func() error { return nil })
	if err != nil || d.Seconds() != 1.5e-3 {
		t.Fatalf("device time %v %v", d, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if l := c.leaks(); len(l) > 0 {
		t.Errorf("after Close: left %v", l)
	}
	if len(c.outside) > 0 {
		t.Errorf("calls outside the context: %v", c.outside)
	}
	if err := b.Close(); err != nil || c.live["context"] != 0 {
		t.Fatalf("second Close: %v, %d contexts", err, c.live["context"])
	}
	if _, err := b.ToFloat32(x); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("use after Close: %v", err)
	}
	if _, err := b.New(backend.F32, 2); err == nil {
		t.Fatal("New after Close succeeded")
	}
	b.Free(x) // Close freed it already: nothing to do, no panic
}

// A failing event call leaves no event behind.
func TestDeviceTimeFailure(t *testing.T) {
	for _, call := range []string{"cuEventRecord", "cuEventSynchronize", "cuEventElapsedTime_v2"} {
		t.Run(call, func(t *testing.T) {
			c := newCLib(t)
			b, err := open(fakeDriver(t), fakeNVRTC(t), fakeCuBLAS(t), Options{CacheDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			c.fail[call] = 700
			if _, err := b.DeviceTime(func() error { return nil }); err == nil || !strings.Contains(err.Error(), "CUDA_ERROR_ILLEGAL_ADDRESS") {
				t.Fatalf("error %v", err)
			}
			if c.live["event"] != 0 || len(c.outside) > 0 {
				t.Fatalf("%d events left; calls outside the context: %v", c.live["event"], c.outside)
			}
		})
	}
}

// Statuses are the low 32 bits of the return register: the program log
// is read although the upper bits are garbage, and the driver's name for
// an unknown status is used.
func TestStatusLow32Bits(t *testing.T) {
	c := newCLib(t)
	c.progLog = "ptxas info    : Used 12 registers"
	img, log, err := fakeNVRTC(t).Compile("src", "x.cu", "sm_90")
	if err != nil || string(img) != "CUBIN" || log != c.progLog {
		t.Fatalf("compile: %q %q %v", img, log, err)
	}
	err = fakeDriver(t).check("cuSomething", junk|12345)
	if err == nil || !strings.Contains(err.Error(), "CUDA_ERROR_FAKE_12345") {
		t.Fatalf("driver error %v, want the driver's own name", err)
	}
	if err := fakeDriver(t).check("cuSomething", junk); err != nil {
		t.Fatalf("status 0 with garbage above: %v", err)
	}
}

// The option strings reach nvrtcCompileProgram intact even when the
// collector runs during the call.
func TestCompileOptionsKeptAlive(t *testing.T) {
	c := newCLib(t)
	c.gcInCall = true
	if _, _, err := fakeNVRTC(t).Compile("src", "x.cu", "sm_90", ptxasVerbose); err != nil {
		t.Fatal(err)
	}
	want := append(compileOptions("sm_90"), ptxasVerbose)
	if strings.Join(c.options, " ") != strings.Join(want, " ") {
		t.Fatalf("options read during the call %q, want %q", c.options, want)
	}
}
