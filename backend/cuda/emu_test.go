package cuda

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cuda/emu"
)

// Tests of the CUDA backend on the CPU stand-ins for the CUDA libraries
// (backend/cuda/emu), and of the stand-ins themselves. Each runs in a
// subprocess whose LD_LIBRARY_PATH finds the stand-ins first.

// pendingOnEmu lists conformance cases the CUDA backend does not pass yet,
// by full test name. They are skipped on the CPU stand-ins, by name, and
// fail on a real GPU. Remove an entry once the backend handles the case.
var pendingOnEmu = []string{}

// skipPattern turns full test names into a -test.skip pattern.
func skipPattern(names []string) string {
	var alts []string
	for _, n := range names {
		var parts []string
		for _, p := range strings.Split(n, "/") {
			parts = append(parts, "^"+regexp.QuoteMeta(p)+"$")
		}
		alts = append(alts, strings.Join(parts, "/"))
	}
	return strings.Join(alts, "|")
}

// TestEmuGPUTests runs the GPU tests of gpu_test.go (the whole conformance
// suite with bfloat16 tolerances, the fixture parity, every device opened
// and closed through Probe, and the other TestGPU tests) on the stand-ins.
func TestEmuGPUTests(t *testing.T) {
	dir := emu.Dir(t)
	args := []string{"-test.run=^TestGPU", "-test.v", "-test.count=1"}
	if len(pendingOnEmu) > 0 {
		args = append(args, "-test.skip="+skipPattern(pendingOnEmu))
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = emu.Env(dir, "MINITRON_REQUIRE_GPU=1")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the GPU tests on the stand-ins failed (%v):\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "relative error") || strings.Contains(line, "compiled") || strings.HasPrefix(line, "--- ") {
			t.Log(strings.TrimSpace(line))
		}
	}
	t.Logf("GPU tests on the stand-ins took %v", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(string(out), "--- PASS: TestGPUConformance") || !strings.Contains(string(out), "--- PASS: TestGPUFixtureParity") ||
		!strings.Contains(string(out), "--- PASS: TestGPUAttentionSplit") {
		t.Fatalf("the GPU tests did not run:\n%s", out)
	}
}

// TestEmuReverseOrder runs the conformance suite and the attention tests
// with the stand-ins starting each launch's blocks last index first and,
// between barriers, running a block's warps last first (CUDA promises
// neither order). The attention backward kernel's blocks wait for one
// another and may only wait for blocks that have started; one waiting
// for a block not yet started would spin forever (the run is stopped
// after two minutes). A missing barrier between a warp that writes shared
// memory and one that reads it shows in one of the two warp orders.
func TestEmuReverseOrder(t *testing.T) {
	dir := emu.Dir(t)
	const limit = 2 * time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	tests := []string{"TestGPUConformance", "TestGPUAttentionWide", "TestGPUAttentionDeterministic", "TestGPUAttentionSplit"}
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^("+strings.Join(tests, "|")+")$", "-test.v", "-test.count=1")
	cmd.Env = emu.Env(dir, "MINITRON_REQUIRE_GPU=1", "MINITRON_EMU_BLOCK_ORDER=reverse", "MINITRON_EMU_WARP_ORDER=reverse", "MINITRON_EMU_THREADS=2")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the GPU tests did not finish in %v with blocks started in reverse order: a block waits for one that has not started\n%s", limit, out)
	}
	if err != nil {
		t.Fatalf("the GPU tests failed with blocks and warps in reverse order (%v):\n%s", err, out)
	}
	for _, name := range tests {
		if !strings.Contains(string(out), "--- PASS: "+name) {
			t.Fatalf("%s did not run:\n%s", name, out)
		}
	}
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// TestEmuStandIns checks what the stand-ins promise beyond running correct
// kernels: faults are reported naming the kernel and the allocation,
// MINITRON_EMU_GPUS and MINITRON_EMU_MEMORY shape the devices, compiler
// errors surface, cuBLAS validates its arguments like the real one.
// Each case runs TestEmuHelper in a subprocess; those that crash the
// process by design check its stderr.
func TestEmuStandIns(t *testing.T) {
	dir := emu.Dir(t)
	for _, c := range []struct {
		name   string
		env    []string
		crash  bool     // the subprocess must die (a fault aborts it)
		stderr []string // lines it must print
	}{
		{name: "semantics", env: []string{"MINITRON_EMU_THREADS=3"}},
		{name: "order", env: []string{"MINITRON_EMU_THREADS=1"}},
		{name: "order", env: []string{"MINITRON_EMU_THREADS=1", "MINITRON_EMU_BLOCK_ORDER=reverse", "MINITRON_EMU_WARP_ORDER=reverse"}},
		{name: "order", env: []string{"MINITRON_EMU_BLOCK_ORDER=sideways"}, stderr: []string{"MINITRON_EMU_BLOCK_ORDER=sideways: want forward or reverse"}},
		{name: "write-past-end", stderr: []string{"kernel write_at wrote past the end of device allocation #", "(100 bytes at", "at byte 100, 1 past its end"}},
		{name: "write-before-start", stderr: []string{"kernel write_at wrote before the start of device allocation #", "at byte -4"}},
		{name: "read-past-end", crash: true, stderr: []string{"kernel read_at, block (0,0,0): invalid memory access", "byte 256 of device allocation #", "(256 bytes at"}},
		{name: "shared-overrun", stderr: []string{"kernel shared_overrun, block (", "): wrote past the end of its 252 bytes of dynamic shared memory (at byte 252)"}},
		{name: "misaligned", crash: true, stderr: []string{"kernel misaligned, block (0,0,0): misaligned memory access", "CUDA_ERROR_MISALIGNED_ADDRESS"}},
		{name: "misaligned16", env: []string{"MODE=0"}, crash: true, stderr: []string{"kernel misaligned16, block (0,0,0): misaligned memory access"}},
		{name: "misaligned16", env: []string{"MODE=1"}, crash: true, stderr: []string{"kernel misaligned16, block (0,0,0): misaligned memory access"}},
		{name: "misaligned16", env: []string{"MODE=2"}, crash: true, stderr: []string{"kernel misaligned16, block (0,0,0): misaligned memory access"}},
		{name: "misaligned16", env: []string{"MODE=3"}},
		{name: "stack-overflow", crash: true, stderr: []string{"kernel deep, block (0,0,0): stack overflow", "MINITRON_EMU_STACK"}},
		{name: "barrier-deadlock", stderr: []string{"kernel diverge, block (0,0,0): threads wait at different barriers"}},
		{name: "partial-warp", stderr: []string{"kernel partial, block (0,0,0) thread (0,0,0): a warp-level operation (shuffle, vote or __syncwarp) with mask 0xffff while lanes 0xffffffff of the warp run"}},
		{name: "assert", stderr: []string{"kernel check, block (0,0,0) thread (0,0,0): assertion `v == 1` failed"}},
		{name: "compile-error"},
		{name: "foreign-image", stderr: []string{"these stand-ins run only kernels their own NVRTC compiled"}},
		{name: "two-gpus", env: []string{"MINITRON_EMU_GPUS=2"}},
		{name: "memory-limit", env: []string{"MINITRON_EMU_MEMORY=64M"}},
		{name: "cublas", stderr: []string{"cublasGemmEx: matrix A [", "is not inside one device allocation"}},
		{name: "go-faults"},
		{name: "modules"},
		{name: "symbols"},
	} {
		t.Run(strings.Join(append([]string{c.name}, c.env...), " "), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestEmuHelper$", "-test.v", "-test.count=1")
			cmd.Env = emu.Env(dir, append(c.env, "MINITRON_EMU_HELPER="+c.name)...)
			out, err := cmd.CombinedOutput()
			if c.crash {
				if err == nil {
					t.Fatalf("the subprocess did not crash:\n%s", out)
				}
			} else if err != nil {
				t.Fatalf("%v:\n%s", err, out)
			}
			for _, s := range c.stderr {
				if !strings.Contains(string(out), s) {
					t.Errorf("output lacks %q:\n%s", s, out)
				}
			}
		})
	}
}

// emuKernels are the kernels the stand-in tests launch.
const emuKernels = `
extern "C" __global__ void write_at(float* p, long long i) {
    if (threadIdx.x == 0 && blockIdx.x == 0) p[i] = 1.f;
}
extern "C" __global__ void read_at(const float* p, long long i, float* out) {
    if (threadIdx.x == 0 && blockIdx.x == 0) out[0] = p[i];
}
extern "C" __global__ void shared_overrun(float* out) {
    extern __shared__ float s[];
    s[threadIdx.x] = 1.f; // one float more than the launch gives
    __syncthreads();
    if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}
__device__ int deep_rec(int d) {
    volatile char buf[512];
    buf[d % 512] = (char)d;
    return d == 0 ? buf[0] : deep_rec(d - 1) + buf[d % 512];
}
extern "C" __global__ void deep(int* out, int d) { out[0] = deep_rec(d); }
extern "C" __global__ void diverge(int* out) {
    if (threadIdx.x < 16) __syncthreads();
    else out[0] = __shfl_sync(0xffffffffu, 1, 0);
}
extern "C" __global__ void check(int v) { assert(v == 1); }
extern "C" __global__ void partial(int* out) {
    if (threadIdx.x < 16) out[threadIdx.x] = __shfl_xor_sync(0xffffu, (int)threadIdx.x, 1);
}

// lanes: per thread of a 64-thread block, 8 values: xor 1, up 1, down 1,
// index 5, ballot of lane%3==0, index 2 within groups of 8, xor 16 of a
// double, any of lane==7.
extern "C" __global__ void lanes(int* out, double* dout) {
    int t = threadIdx.x, lane = t & 31;
    int* o = out + 8 * t;
    o[0] = __shfl_xor_sync(0xffffffffu, t, 1);
    o[1] = __shfl_up_sync(0xffffffffu, t, 1);
    o[2] = __shfl_down_sync(0xffffffffu, t, 1);
    o[3] = __shfl_sync(0xffffffffu, t, 5);
    o[4] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
    o[5] = __shfl_sync(0xffffffffu, t, 2, 8);
    dout[t] = __shfl_xor_sync(0xffffffffu, t + 0.5, 16);
    o[6] = __any_sync(0xffffffffu, lane == 7);
    o[7] = __all_sync(0xffffffffu, t < 40);
}

// block_sums: out[b] = sum of in[b*n .. b*n+n) over a block of any size,
// through shared memory and __syncthreads, and a grid-wide atomic count
// and float sum.
extern "C" __global__ void block_sums(const float* in, int n, float* out, unsigned* count, float* total) {
    __shared__ float part[1024];
    float s = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += in[(long long)blockIdx.x * n + i];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = 1; w < (int)blockDim.x; w <<= 1) {
        float v = ((threadIdx.x & (2 * w - 1)) == 0 && threadIdx.x + w < blockDim.x) ? part[threadIdx.x + w] : 0.f;
        __syncthreads();
        part[threadIdx.x] += v;
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = part[0];
    atomicAdd(count, 1u);
    atomicAdd(total, 1.f);
}

// Benchmark kernels: nothing; n shuffles per lane; n block barriers.
extern "C" __global__ void nop(int* p) {}
extern "C" __global__ void shuffles(float* out, int n) {
    float v = threadIdx.x;
    for (int i = 0; i < n; i++) v += __shfl_xor_sync(0xffffffffu, v, i & 31);
    out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}
extern "C" __global__ void barriers(int* out, int n) {
    int v = threadIdx.x;
    for (int i = 0; i < n; i++) __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

// order records the order blocks start in (out[block] = how many started
// before it) and, in out[blocks + block], what warp 0 reads of a shared
// value warp 1 writes with no barrier between: 1 when warp 1 ran first.
extern "C" __global__ void order(int* out, int* started) {
    __shared__ int s;
    if (threadIdx.x == 0) {
        out[blockIdx.x] = atomicAdd(started, 1);
        s = 0;
    }
    __syncthreads();
    if (threadIdx.x == 32) s = 1;
    if (threadIdx.x == 0) out[gridDim.x + blockIdx.x] = s;
    __syncthreads();
}

// misaligned reads a float at an odd address, as a bfloat16 tensor's
// tagged address would be read without its tag bit cleared.
extern "C" __global__ void misaligned(const float* p, float* out) {
    out[0] = *(const float*)((const char*)p + 1);
}

// misaligned16 copies 16 bytes a thread into shared memory with cp.async
// and reads them back with ldmatrix, making one access a GPU refuses:
// mode 0 a copy from a global address 8 bytes past a multiple of 16, mode
// 1 a copy to such a shared address, mode 2 an ldmatrix whose lane 5 gives
// such a row address; mode 3 none.
extern "C" __global__ void misaligned16(const float* p, int mode, float* out) {
    extern __shared__ float sm[];
    emu_cp_async_16(sm + 4 * threadIdx.x + (mode == 1 ? 2 : 0), p + 4 * threadIdx.x + (mode == 0 ? 2 : 0));
    emu_cp_async_commit();
    emu_cp_async_wait(0);
    __syncthreads();
    unsigned r[4];
    emu_ldmatrix(r, 4, false, sm + 4 * threadIdx.x + (mode == 2 && threadIdx.x == 5 ? 2 : 0));
    out[threadIdx.x] = (float)r[0];
}

// fastmath: out[i] = __expf(x[i]), out[n+i] = rsqrtf(x[i]).
extern "C" __global__ void fastmath(const float* x, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        out[i] = __expf(x[i]);
        out[n + i] = rsqrtf(x[i]);
    }
}

// early_exit: the upper half of the block returns before a barrier the
// lower half meets twice (returned threads count as arrived).
extern "C" __global__ void early_exit(int* out) {
    __shared__ int x;
    if (threadIdx.x >= blockDim.x / 2) return;
    if (threadIdx.x == 0) x = 41;
    __syncthreads();
    if (threadIdx.x == 1) x++;
    __syncthreads();
    out[threadIdx.x] = x;
}
`

// emuDevice opens device ordinal on the stand-ins with the test kernels
// (compiled through the backend's kernel cache) loaded.
func emuDevice(t testing.TB, ordinal int) *gpu {
	t.Helper()
	drv, rtc, blas, err := loadLibraries()
	if err != nil {
		t.Fatal(err)
	}
	dev, info, err := drv.init(ordinal)
	if err != nil {
		t.Fatal(err)
	}
	g := &gpu{drv: drv, blas: blas, dev: dev, inf: info, funcs: map[string]uintptr{}}
	if err := drv.check("cuDevicePrimaryCtxRetain", drv.cuDevicePrimaryCtxRetain.call(uintptr(unsafe.Pointer(&g.ctx)), uintptr(dev))); err != nil {
		t.Fatal(err)
	}
	leave, err := g.enter()
	if err != nil {
		t.Fatal(err)
	}
	defer leave()
	if err := drv.check("cuStreamCreate", drv.cuStreamCreate.call(uintptr(unsafe.Pointer(&g.stream)), 1)); err != nil {
		t.Fatal(err)
	}
	if err := blas.check("cublasCreate_v2", blas.create.call(uintptr(unsafe.Pointer(&g.handle)))); err != nil {
		t.Fatal(err)
	}
	cache, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(emuKernels))
	img, _, err := cachedCompile(cache, "emu-test-"+hex.EncodeToString(sum[:8]), ".cubin", func() ([]byte, error) {
		img, _, err := rtc.Compile(emuKernels, "emu_test.cu", "sm_90")
		return img, err
	})
	if err != nil {
		t.Fatal(err)
	}
	var mod uintptr
	if err := drv.check("cuModuleLoadData", drv.cuModuleLoadData.call(uintptr(unsafe.Pointer(&mod)), uintptr(unsafe.Pointer(&img[0])))); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"write_at", "read_at", "shared_overrun", "deep", "diverge", "check", "lanes", "block_sums",
		"early_exit", "nop", "shuffles", "barriers", "partial", "order", "fastmath", "misaligned", "misaligned16"} {
		var f uintptr
		cname := cstr(name)
		if err := drv.check("cuModuleGetFunction", drv.cuModuleGetFunction.call(uintptr(unsafe.Pointer(&f)), mod, uintptr(unsafe.Pointer(&cname[0])))); err != nil {
			t.Fatalf("%v (%s)", err, name)
		}
		g.funcs[name] = f
	}
	return g
}

func (g *gpu) mustMalloc(t testing.TB, n int64) uintptr {
	t.Helper()
	p, err := g.malloc(n)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func download[T any](t testing.TB, g *gpu, p uintptr, n int) []T {
	t.Helper()
	out := make([]T, n)
	var zero T
	if err := g.dtoh(unsafe.Pointer(&out[0]), p, int64(n)*int64(unsafe.Sizeof(zero))); err != nil {
		t.Fatal(err)
	}
	return out
}

func upload[T any](t testing.TB, g *gpu, v []T) uintptr {
	t.Helper()
	var zero T
	n := int64(len(v)) * int64(unsafe.Sizeof(zero))
	p := g.mustMalloc(t, n)
	if err := g.htod(p, unsafe.Pointer(&v[0]), n); err != nil {
		t.Fatal(err)
	}
	return p
}

// wantStatus checks that err is the CUDA error named.
func wantStatus(t *testing.T, err error, name string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Name != name {
		t.Fatalf("got %v, want %s", err, name)
	}
}

var one = [3]uint32{1, 1, 1}

// emuHelpers are the cases of TestEmuStandIns, run in the subprocess.
var emuHelpers = map[string]func(t *testing.T){
	"semantics": func(t *testing.T) {
		g := emuDevice(t, 0)
		out, dout := g.mustMalloc(t, 64*8*4), g.mustMalloc(t, 64*8)
		if err := g.launch("lanes", one, [3]uint32{64, 1, 1}, 0, []arg{argPtr(out), argPtr(dout)}); err != nil {
			t.Fatal(err)
		}
		got, dgot := download[int32](t, g, out, 64*8), download[float64](t, g, dout, 64)
		for tid := 0; tid < 64; tid++ {
			lane, base := tid&31, tid&^31
			src := func(l int) int { return base + l }
			up, down := tid-1, tid+1
			if lane == 0 {
				up = tid
			}
			if lane == 31 {
				down = tid
			}
			ballot := int32(0)
			for l := 0; l < 32; l += 3 {
				ballot |= 1 << l
			}
			want := []int32{int32(tid ^ 1), int32(up), int32(down), int32(src(5)), ballot, int32(tid&^7 + 2), 1, 1}
			if tid >= 32 {
				want[7] = 0 // the second warp holds threads 40..63
			}
			for k, w := range want {
				if got[8*tid+k] != w {
					t.Errorf("thread %d value %d: %d, want %d", tid, k, got[8*tid+k], w)
				}
			}
			if w := float64(tid^16) + 0.5; dgot[tid] != w {
				t.Errorf("thread %d: double shuffle %v, want %v", tid, dgot[tid], w)
			}
		}
		// Blocks of 1024, 96 and 33 threads, over 3 worker threads: sums
		// through shared memory and barriers, and grid-wide atomics.
		for _, bs := range []int{1024, 96, 33} {
			const blocks, n = 40, 500
			in := make([]float32, blocks*n)
			for i := range in {
				in[i] = float32(i%7) - 2
			}
			pin := upload(t, g, in)
			res := g.mustMalloc(t, blocks*4)
			acc := upload(t, g, []uint32{0, 0})
			if err := g.launch("block_sums", [3]uint32{blocks, 1, 1}, [3]uint32{uint32(bs), 1, 1}, 0,
				[]arg{argPtr(pin), argInt(n), argPtr(res), argPtr(acc), argPtr(acc + 4)}); err != nil {
				t.Fatal(err)
			}
			sums := download[float32](t, g, res, blocks)
			for b := range sums {
				var w float32
				for i := 0; i < n; i++ {
					w += in[b*n+i]
				}
				if sums[b] != w {
					t.Errorf("block size %d: block %d sum %v, want %v", bs, b, sums[b], w)
				}
			}
			cnt := download[uint32](t, g, acc, 2)
			if cnt[0] != uint32(blocks*bs) || math.Float32frombits(cnt[1]) != float32(blocks*bs) {
				t.Errorf("block size %d: atomic count %d and sum %v, want %d", bs, cnt[0], math.Float32frombits(cnt[1]), blocks*bs)
			}
		}
		// The fast-math functions are as inexact as CUDA documents, not
		// correctly rounded: __expf within 2 + floor(1.173|x|) ulp,
		// rsqrtf within 2 (each half an ulp more for the host's libm).
		const nx = 2000
		xs := make([]float32, nx)
		for i := range xs {
			xs[i] = float32(i-nx/2) * 0.043
		}
		xs[0] = 1e-30
		fo := g.mustMalloc(t, 2*nx*4)
		if err := g.launch("fastmath", [3]uint32{(nx + 255) / 256, 1, 1}, [3]uint32{256, 1, 1}, 0, []arg{argPtr(upload(t, g, xs)), argPtr(fo), argInt(nx)}); err != nil {
			t.Fatal(err)
		}
		fm := download[float32](t, g, fo, 2*nx)
		ulps := func(got float32, want float64) float64 {
			w := float32(want)
			return math.Abs(float64(got)-want) / float64(math.Nextafter32(w, float32(math.Inf(1)))-w)
		}
		inexact := 0
		for i, x := range xs {
			e := ulps(fm[i], math.Exp(float64(x)))
			if e > 2.5+math.Floor(math.Abs(1.173*float64(x))) {
				t.Errorf("__expf(%g) = %g, %.2f ulp from %g", x, fm[i], e, math.Exp(float64(x)))
			}
			if x > 0 {
				r := 1 / math.Sqrt(float64(x))
				if e := ulps(fm[nx+i], r); e > 2.5 {
					t.Errorf("rsqrtf(%g) = %g, %.2f ulp from %g", x, fm[nx+i], e, r)
				}
				if fm[nx+i] != float32(r) {
					inexact++
				}
			}
			if fm[i] != float32(math.Exp(float64(x))) {
				inexact++
			}
		}
		if inexact < nx/2 {
			t.Errorf("only %d of %d fast-math results differ from the correctly rounded ones", inexact, 2*nx)
		}
		eo := g.mustMalloc(t, 64*4)
		if err := g.launch("early_exit", one, [3]uint32{64, 1, 1}, 0, []arg{argPtr(eo)}); err != nil {
			t.Fatal(err)
		}
		for i, v := range download[int32](t, g, eo, 32) {
			if v != 42 {
				t.Fatalf("early_exit: thread %d read %d, want 42", i, v)
			}
		}
	},
	"order": func(t *testing.T) {
		// One worker thread: blocks start one after another, in index
		// order or (MINITRON_EMU_BLOCK_ORDER=reverse) last first. Between
		// two barriers the two warp orders interleave warps differently:
		// by default the warp that reached the barrier last goes on first
		// (warp 1 writes before warp 0 reads), with
		// MINITRON_EMU_WARP_ORDER=reverse warp 0 does.
		if err := Available(); err != nil {
			wantStatus(t, err, "CUDA_ERROR_INVALID_VALUE")
			return
		}
		g := emuDevice(t, 0)
		const blocks = 5
		out, started := g.mustMalloc(t, 2*blocks*4), upload(t, g, []int32{0})
		if err := g.launch("order", [3]uint32{blocks, 1, 1}, [3]uint32{64, 1, 1}, 0, []arg{argPtr(out), argPtr(started)}); err != nil {
			t.Fatal(err)
		}
		got := download[int32](t, g, out, 2*blocks)
		revBlocks, revWarps := os.Getenv("MINITRON_EMU_BLOCK_ORDER") == "reverse", os.Getenv("MINITRON_EMU_WARP_ORDER") == "reverse"
		for b := range blocks {
			wantStart, wantSeen := int32(b), int32(1)
			if revBlocks {
				wantStart = blocks - 1 - int32(b)
			}
			if revWarps {
				wantSeen = 0
			}
			if got[b] != wantStart || got[blocks+b] != wantSeen {
				t.Errorf("block %d started %d-th and read %d, want %d-th and %d", b, got[b], got[blocks+b], wantStart, wantSeen)
			}
		}
	},
	"write-past-end": func(t *testing.T) {
		g := emuDevice(t, 0)
		p := g.mustMalloc(t, 100) // 25 floats
		err := g.launch("write_at", one, [3]uint32{32, 1, 1}, 0, []arg{argPtr(p), argI64(25)})
		wantStatus(t, err, "CUDA_ERROR_ILLEGAL_ADDRESS")
		wantStatus(t, g.sync(), "CUDA_ERROR_ILLEGAL_ADDRESS") // sticky, as on a GPU
	},
	"write-before-start": func(t *testing.T) {
		g := emuDevice(t, 0)
		p := g.mustMalloc(t, 256)
		wantStatus(t, g.launch("write_at", one, [3]uint32{32, 1, 1}, 0, []arg{argPtr(p), argI64(-1)}), "CUDA_ERROR_ILLEGAL_ADDRESS")
	},
	"read-past-end": func(t *testing.T) {
		g := emuDevice(t, 0)
		p, out := g.mustMalloc(t, 256), g.mustMalloc(t, 4)
		g.launch("read_at", one, [3]uint32{32, 1, 1}, 0, []arg{argPtr(p), argI64(64), argPtr(out)})
		t.Fatal("reading past the end of an allocation did not stop the process")
	},
	"shared-overrun": func(t *testing.T) {
		g := emuDevice(t, 0)
		out := g.mustMalloc(t, 8)
		err := g.launch("shared_overrun", [3]uint32{2, 1, 1}, [3]uint32{64, 1, 1}, 63*4, []arg{argPtr(out)})
		wantStatus(t, err, "CUDA_ERROR_ILLEGAL_ADDRESS")
	},
	"misaligned": func(t *testing.T) {
		g := emuDevice(t, 0)
		p, out := g.mustMalloc(t, 64), g.mustMalloc(t, 4)
		g.launch("misaligned", one, [3]uint32{32, 1, 1}, 0, []arg{argPtr(p), argPtr(out)})
		t.Fatal("a misaligned access did not stop the process")
	},
	"misaligned16": func(t *testing.T) {
		g := emuDevice(t, 0)
		mode, _ := strconv.Atoi(os.Getenv("MODE"))
		p, out := g.mustMalloc(t, 32*16+16), g.mustMalloc(t, 32*4)
		err := g.launch("misaligned16", one, [3]uint32{32, 1, 1}, 32*16+16, []arg{argPtr(p), argInt(mode), argPtr(out)})
		if mode < 3 {
			t.Fatalf("a misaligned 16-byte access (mode %d) did not stop the process: %v", mode, err)
		}
		// Mode 3: an aligned ldmatrix runs.
		if err == nil {
			err = g.sync()
		}
		if err != nil {
			t.Fatal(err)
		}
	},
	"stack-overflow": func(t *testing.T) {
		g := emuDevice(t, 0)
		out := g.mustMalloc(t, 4)
		g.launch("deep", one, [3]uint32{32, 1, 1}, 0, []arg{argPtr(out), argInt(10000)})
		t.Fatal("a stack overflow did not stop the process")
	},
	"barrier-deadlock": func(t *testing.T) {
		g := emuDevice(t, 0)
		out := g.mustMalloc(t, 4)
		wantStatus(t, g.launch("diverge", one, [3]uint32{32, 1, 1}, 0, []arg{argPtr(out)}), "CUDA_ERROR_LAUNCH_FAILED")
	},
	"partial-warp": func(t *testing.T) {
		g := emuDevice(t, 0)
		out := g.mustMalloc(t, 64)
		wantStatus(t, g.launch("partial", one, [3]uint32{32, 1, 1}, 0, []arg{argPtr(out)}), "CUDA_ERROR_LAUNCH_FAILED")
	},
	"assert": func(t *testing.T) {
		g := emuDevice(t, 0)
		if err := g.launch("check", [3]uint32{3, 1, 1}, [3]uint32{32, 1, 1}, 0, []arg{argInt(1)}); err != nil {
			t.Fatal(err)
		}
		wantStatus(t, g.launch("check", [3]uint32{3, 1, 1}, [3]uint32{32, 1, 1}, 0, []arg{argInt(2)}), "CUDA_ERROR_ASSERT")
	},
	"compile-error": func(t *testing.T) {
		_, rtc, _, err := loadLibraries()
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = rtc.Compile("extern \"C\" __global__ void k(int* p) {\n    p[0] = undefined_name;\n}\n", "broken.cu", "sm_90")
		if err == nil || !strings.Contains(err.Error(), "broken.cu:2:12: error: use of undeclared identifier 'undefined_name'") {
			t.Fatalf("compile error: %v", err)
		}
		if _, _, err := rtc.Compile("extern \"C\" __global__ void k() {}\n", "ok.cu", "sm_42"); err == nil || !strings.Contains(err.Error(), "NVRTC_ERROR_INVALID_OPTION") {
			t.Fatalf("unknown architecture: %v", err)
		}
	},
	"foreign-image": func(t *testing.T) {
		g := emuDevice(t, 0)
		leave, err := g.enter()
		if err != nil {
			t.Fatal(err)
		}
		defer leave()
		cubin := append([]byte("\x7fELF\x02\x01\x01\x33"), make([]byte, 64)...) // an NVIDIA cubin's ELF header
		var mod uintptr
		wantStatus(t, g.drv.check("cuModuleLoadData", g.drv.cuModuleLoadData.call(uintptr(unsafe.Pointer(&mod)), uintptr(unsafe.Pointer(&cubin[0])))), "CUDA_ERROR_INVALID_IMAGE")
	},
	"two-gpus": func(t *testing.T) {
		var bs [2]*Backend
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range bs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				bs[i], errs[i] = Open(Options{Device: i})
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if _, err := Open(Options{Device: 2}); err == nil || !strings.Contains(err.Error(), "GPU 2 requested but 2 visible") {
			t.Fatalf("a third device: %v", err)
		}
		// The same product on both devices at once, each from its own goroutine.
		x := make([]float32, 64*48)
		for i := range x {
			x[i] = float32(i%13) - 6
		}
		res := make([][]float32, 2)
		for i, b := range bs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, err := b.FromFloat32(x, 64, 48)
				if err != nil {
					errs[i] = err
					return
				}
				c, _ := b.New(backend.F32, 64, 64)
				for range 20 {
					if errs[i] = b.MatMul(c, a, a, false, true, 1, 0); errs[i] != nil {
						return
					}
				}
				res[i], errs[i] = b.ToFloat32(c)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		for i := range res[0] {
			if res[0][i] != res[1][i] {
				t.Fatalf("element %d: %v on GPU 0, %v on GPU 1", i, res[0][i], res[1][i])
			}
		}
		if !strings.Contains(bs[1].Name(), "minitron CPU stand-in") {
			t.Fatalf("name %q", bs[1].Name())
		}
	},
	"memory-limit": func(t *testing.T) {
		b, err := Open(Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, total, err := b.dev.memInfo(); err != nil || total != 64<<20 {
			t.Fatalf("total memory %d (%v), want 64 MiB", total, err)
		}
		small, err := b.New(backend.F32, 4<<20) // 16 MiB
		if err != nil {
			t.Fatal(err)
		}
		if free, _, _ := b.dev.memInfo(); free > 48<<20 {
			t.Fatalf("free memory %d after allocating 16 MiB of 64", free)
		}
		_, err = b.New(backend.F32, 16<<20) // 64 MiB more
		if !errors.Is(err, ErrOutOfMemory) {
			t.Fatalf("allocation beyond MINITRON_EMU_MEMORY: %v", err)
		}
		b.Free(small)
	},
	"cublas": func(t *testing.T) {
		g := emuDevice(t, 0)
		// C (bf16) comes from a fresh allocation: garbage (NaN), which
		// beta = 0 must not read. A is 5x3 (lda 7), B 3x4 (ldb 4), C 5x4
		// (ldc 6), all column-major; alpha 2.
		const m, n, k, lda, ldb, ldc = 5, 4, 3, 7, 4, 6
		av := make([]float32, lda*k)
		bv := make([]float32, ldb*n)
		for i := range av {
			av[i] = float32(i%5) - 1.5
		}
		for i := range bv {
			bv[i] = float32(i%3) + 0.25
		}
		bf := func(v []float32) []uint16 {
			out := make([]uint16, len(v))
			for i, x := range v {
				out[i] = backend.F32ToBF16(x)
			}
			return out
		}
		pa, pb := upload(t, g, bf(av)), upload(t, g, bf(bv))
		pc := g.mustMalloc(t, 2*ldc*n)
		if c0 := download[uint16](t, g, pc, ldc*n); !math.IsNaN(float64(backend.BF16ToF32(c0[0]))) {
			t.Fatalf("fresh device memory is %#x, want NaN garbage", c0[0])
		}
		call := gemmCall{m: m, n: n, k: k, alpha: 2, beta: 0, a: pa, b: pb, c: pc, lda: lda, ldb: ldb, ldc: ldc, typeAB: dataBF16, typeC: dataBF16}
		if err := g.gemm(call); err != nil {
			t.Fatal(err)
		}
		got := download[uint16](t, g, pc, ldc*n)
		for j := 0; j < n; j++ {
			for i := 0; i < m; i++ {
				var s float64
				for l := 0; l < k; l++ {
					s += float64(backend.BF16ToF32(backend.F32ToBF16(av[i+l*lda]))) * float64(backend.BF16ToF32(backend.F32ToBF16(bv[l+j*ldb])))
				}
				want := backend.BF16ToF32(backend.F32ToBF16(float32(2 * s)))
				if g := backend.BF16ToF32(got[i+j*ldc]); g != want {
					t.Errorf("C[%d,%d] = %v, want %v", i, j, g, want)
				}
			}
		}
		bad := call
		bad.lda = m - 1
		wantStatus(t, g.gemm(bad), "CUBLAS_STATUS_INVALID_VALUE")
		bad = call
		bad.typeC = dataF32 + 99
		wantStatus(t, g.gemm(bad), "CUBLAS_STATUS_NOT_SUPPORTED")
		bad = call
		bad.a = pa + 64 // A then reaches past its allocation
		wantStatus(t, g.gemm(bad), "CUBLAS_STATUS_EXECUTION_FAILED")
	},
	"symbols": func(t *testing.T) {
		// Every driver, NVRTC, cuBLAS and NCCL call the backend binds or is
		// about to (multi-GPU, pinned memory, fp32 master weights), with its
		// versioned names.
		want := map[*libSpec][]string{
			&driverSpec: {"cuInit", "cuDriverGetVersion", "cuGetErrorName", "cuGetErrorString", "cuDeviceGetCount",
				"cuDeviceGet", "cuDeviceGetName", "cuDeviceGetAttribute", "cuDeviceTotalMem_v2", "cuDeviceGetUuid",
				"cuDeviceGetUuid_v2", "cuDeviceGetPCIBusId", "cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRelease",
				"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxReset_v2", "cuCtxSetCurrent", "cuCtxGetCurrent",
				"cuCtxGetDevice", "cuCtxSynchronize", "cuMemGetInfo_v2", "cuMemAlloc_v2", "cuMemFree_v2",
				"cuMemAllocHost_v2", "cuMemHostAlloc", "cuMemFreeHost", "cuMemcpyHtoD_v2", "cuMemcpyDtoH_v2",
				"cuMemcpyDtoD_v2", "cuMemcpyHtoDAsync_v2", "cuMemcpyDtoHAsync_v2", "cuMemcpyDtoDAsync_v2",
				"cuMemcpyPeerAsync", "cuMemsetD32Async", "cuMemsetD8Async", "cuStreamCreate", "cuStreamDestroy",
				"cuStreamDestroy_v2", "cuStreamSynchronize", "cuStreamWaitEvent", "cuEventCreate", "cuEventRecord",
				"cuEventSynchronize", "cuEventQuery", "cuEventElapsedTime", "cuEventElapsedTime_v2", "cuEventDestroy_v2",
				"cuModuleLoadData", "cuModuleGetFunction", "cuModuleUnload", "cuFuncSetAttribute", "cuLaunchKernel"},
			&nvrtcSpec: {"nvrtcVersion", "nvrtcCreateProgram", "nvrtcCompileProgram", "nvrtcDestroyProgram",
				"nvrtcGetProgramLogSize", "nvrtcGetProgramLog", "nvrtcGetCUBINSize", "nvrtcGetCUBIN", "nvrtcGetPTXSize",
				"nvrtcGetPTX", "nvrtcGetErrorString", "nvrtcGetNumSupportedArchs", "nvrtcGetSupportedArchs"},
			&cublasSpec: {"cublasCreate_v2", "cublasDestroy_v2", "cublasSetStream_v2", "cublasGemmEx",
				"cublasGemmStridedBatchedEx", "cublasSgemm_v2", "cublasSetMathMode", "cublasSetWorkspace_v2", "cublasGetProperty"},
			&ncclSpec: {"ncclGetVersion", "ncclGetUniqueId", "ncclCommInitRank", "ncclCommDestroy", "ncclCommAbort",
				"ncclGetErrorString", "ncclGetLastError", "ncclAllReduce", "ncclReduceScatter", "ncclAllGather", "ncclBroadcast",
				"ncclGroupStart", "ncclGroupEnd"},
		}
		for spec, syms := range want {
			lib, err := osEnv.openSpec(*spec, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			procs := map[string]*proc{}
			for _, s := range syms {
				procs[s] = new(proc)
			}
			if err := lib.bind(procs); err != nil {
				t.Error(err)
			}
		}
	},
	"modules": func(t *testing.T) {
		// Two modules loaded one after the other are two modules.
		emuDevice(t, 0)
		b, err := Open(Options{})
		if err != nil {
			t.Fatal(err)
		}
		x, _ := b.New(backend.BF16, 10)
		if err := b.Fill(x, 3); err != nil {
			t.Fatal(err)
		}
		if v, err := b.ToFloat32(x); err != nil || v[9] != 3 {
			t.Fatalf("%v %v", v, err)
		}
	},
	"go-faults": func(t *testing.T) {
		b, err := Open(Options{}) // installs the stand-ins' fault handler
		if err != nil {
			t.Fatal(err)
		}
		x, _ := b.New(backend.BF16, 1000)
		if err := b.Fill(x, 1); err != nil { // a kernel ran on this thread
			t.Fatal(err)
		}
		// Go's own nil dereferences still become panics.
		var p *int
		msg := func() (msg string) {
			defer func() { msg = fmt.Sprint(recover()) }()
			return fmt.Sprint(*p)
		}()
		if !strings.Contains(msg, "nil pointer dereference") {
			t.Fatalf("recovered %q", msg)
		}
	},
}

// TestEmuHelper runs one case of TestEmuStandIns (in its subprocess).
func TestEmuHelper(t *testing.T) {
	name := os.Getenv("MINITRON_EMU_HELPER")
	if name == "" {
		t.Skip("runs as a subprocess of TestEmuStandIns")
	}
	f, ok := emuHelpers[name]
	if !ok {
		t.Fatalf("no helper %q", name)
	}
	f(t)
}
