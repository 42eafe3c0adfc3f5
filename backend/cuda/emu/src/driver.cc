// The stand-in CUDA driver API (libcuda.so.1): devices backed by the host,
// memory in guarded host allocations, kernels from the stand-in NVRTC's
// images run by sched.cc. Every call completes before it returns, so stream
// order is kept trivially and "asynchronous" calls are synchronous.
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "driver.h"
#include "emu.h"

#define API extern "C" __attribute__((visibility("default")))

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

Config g_config;

void emu_log(const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n > sizeof buf - 2) n = sizeof buf - 2;
    buf[n++] = '\n';
    fprintf(stderr, "minitron emu: %.*s", n, buf);
    fflush(stderr);
}

namespace {

const int kDriverVersion = 12080; // CUDA 12.8, as the stand-in NVRTC reports
const int kMaxDevices = 64;
const int kDefaultShared = 48 << 10;
const int kOptinShared = 227 << 10;

enum : uint32_t { kCtxMagic = 0x43545831, kModMagic = 0x4d4f4431, kFunMagic = 0x46554e31, kStreamMagic = 0x53545231, kEventMagic = 0x45564e31 };

struct Ctx {
    uint32_t magic = kCtxMagic;
    int dev;
    bool primary;
    std::atomic<int> sticky{0};
    std::atomic<int> refs{0};
    std::mutex mu;
    char last_kernel[128] = "";
};

struct Device {
    Ctx* primary;
    uint64_t total;
};

struct Module {
    uint32_t magic = kModMagic;
    void* handle;
    Ctx* ctx;
    int fd;           // the module's file, open while it is loaded
    std::string path; // a temporary file's name, removed at unload
};

struct Function {
    uint32_t magic = kFunMagic;
    Module* mod;
    std::string name;
    void (*entry)(void**);
    std::string sig; // p pointer, 4 or 8: bytes
    int max_dynamic = kDefaultShared;
};

struct Stream {
    uint32_t magic = kStreamMagic;
    Ctx* ctx;
};

struct Event {
    uint32_t magic = kEventMagic;
    unsigned flags;
    bool recorded = false;
    std::chrono::steady_clock::time_point t;
};

std::once_flag g_init_once;
int g_init_status = CUDA_ERROR_NOT_INITIALIZED;
Device g_dev[kMaxDevices];
thread_local Ctx* tls_ctx;
thread_local std::vector<Ctx*> tls_stack;

// parse_size reads bytes with an optional K, M, G or T suffix (powers of 1024).
bool parse_size(const char* s, uint64_t* out) {
    char* end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno) return false;
    uint64_t mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1ull << 10; end++; break;
    case 'm': case 'M': mul = 1ull << 20; end++; break;
    case 'g': case 'G': mul = 1ull << 30; end++; break;
    case 't': case 'T': mul = 1ull << 40; end++; break;
    }
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'b' || *end == 'B') end++;
    if (*end != 0 || v > UINT64_MAX / mul) return false;
    *out = v * mul;
    return true;
}

int cores() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int read_config() {
    Config c;
    c.sms = cores();
    c.threads = c.sms;
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    c.memory = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 16ull << 30;
    if (const char* s = getenv("MINITRON_EMU_GPUS"); s && *s) {
        char* end;
        long v = strtol(s, &end, 10);
        if (*end || v < 0 || v > kMaxDevices) {
            emu_log("MINITRON_EMU_GPUS=%s: want a number of devices from 0 to %d", s, kMaxDevices);
            return CUDA_ERROR_INVALID_VALUE;
        }
        c.gpus = (int)v;
    }
    if (const char* s = getenv("MINITRON_EMU_MEMORY"); s && *s) {
        if (!parse_size(s, &c.memory) || c.memory == 0) {
            emu_log("MINITRON_EMU_MEMORY=%s: want bytes per device, e.g. 2147483648 or 2G", s);
            return CUDA_ERROR_INVALID_VALUE;
        }
    }
    if (const char* s = getenv("MINITRON_EMU_THREADS"); s && *s) {
        char* end;
        long v = strtol(s, &end, 10);
        if (*end || v < 1 || v > 1024) {
            emu_log("MINITRON_EMU_THREADS=%s: want a number of threads from 1 to 1024", s);
            return CUDA_ERROR_INVALID_VALUE;
        }
        c.threads = (int)v;
    }
    if (const char* s = getenv("MINITRON_EMU_STACK"); s && *s) {
        uint64_t v;
        if (!parse_size(s, &v) || v < (16 << 10) || v > (64 << 20)) {
            emu_log("MINITRON_EMU_STACK=%s: want a fiber stack size from 16K to 64M", s);
            return CUDA_ERROR_INVALID_VALUE;
        }
        size_t p = 16 << 10;
        while (p < v) p <<= 1;
        c.stack = p;
    }
    if (const char* s = getenv("MINITRON_EMU_BLOCK_ORDER"); s && *s) {
        if (strcmp(s, "reverse") != 0 && strcmp(s, "forward") != 0) {
            emu_log("MINITRON_EMU_BLOCK_ORDER=%s: want forward or reverse", s);
            return CUDA_ERROR_INVALID_VALUE;
        }
        c.reverse_blocks = strcmp(s, "reverse") == 0;
    }
    if (const char* s = getenv("MINITRON_EMU_WARP_ORDER"); s && *s) {
        if (strcmp(s, "reverse") != 0 && strcmp(s, "forward") != 0) {
            emu_log("MINITRON_EMU_WARP_ORDER=%s: want forward or reverse", s);
            return CUDA_ERROR_INVALID_VALUE;
        }
        c.reverse_warps = strcmp(s, "reverse") == 0;
    }
    g_config = c;
    return CUDA_SUCCESS;
}

bool initialized() { return g_init_status == CUDA_SUCCESS; }

// current returns the calling thread's context, checking its sticky error.
int current(Ctx** out) {
    if (!initialized()) return CUDA_ERROR_NOT_INITIALIZED;
    Ctx* c = tls_ctx;
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    if (int e = c->sticky.load()) return e;
    *out = c;
    return CUDA_SUCCESS;
}

int fail_ctx(Ctx* c, int code) {
    int zero = 0;
    c->sticky.compare_exchange_strong(zero, code);
    return code;
}

// check_all checks the canaries of every allocation of c's device.
int check_all(Ctx* c) {
    char after[200];
    {
        std::lock_guard<std::mutex> g(c->mu);
        if (c->last_kernel[0])
            snprintf(after, sizeof after, "a kernel (the latest launched: %s) or copy", c->last_kernel);
        else
            snprintf(after, sizeof after, "a copy");
    }
    if (!mem_check(0, c->dev, after)) return fail_ctx(c, CUDA_ERROR_ILLEGAL_ADDRESS);
    return CUDA_SUCCESS;
}

bool valid_device(CUdevice d) { return initialized() && d >= 0 && d < g_config.gpus; }

template <typename T>
bool valid(T* p, uint32_t magic) {
    return p && p->magic == magic;
}

int check_stream(void* s) {
    uintptr_t v = (uintptr_t)s;
    if (v == 0 || v == 1 || v == 2) return CUDA_SUCCESS; // default, legacy and per-thread streams
    return valid((Stream*)s, kStreamMagic) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

int copy(void* dst, const void* src, size_t n, bool dcheck, bool scheck, const char* call) {
    Ctx* c;
    if (int e = current(&c)) return e;
    if (n == 0) return CUDA_SUCCESS;
    if (dcheck && !mem_range((uintptr_t)dst, n)) {
        emu_log("%s: destination [%#lx, +%zu) is not inside one device allocation", call, (unsigned long)dst, n);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (scheck && !mem_range((uintptr_t)src, n)) {
        emu_log("%s: source [%#lx, +%zu) is not inside one device allocation", call, (unsigned long)src, n);
        return CUDA_ERROR_INVALID_VALUE;
    }
    const char* prev = set_current_op(call);
    memmove(dst, src, n);
    set_current_op(prev);
    if (scheck && !dcheck) return check_all(c); // a download waits for the device
    return CUDA_SUCCESS;
}

template <typename T>
int fill(CUdeviceptr dst, T v, size_t n, const char* call) {
    Ctx* c;
    if (int e = current(&c)) return e;
    if (n == 0) return CUDA_SUCCESS;
    if (n > SIZE_MAX / sizeof(T) || !mem_range((uintptr_t)dst, n * sizeof(T))) {
        emu_log("%s: [%#llx, +%zu elements) is not inside one device allocation", call, dst, n);
        return CUDA_ERROR_INVALID_VALUE;
    }
    T* p = (T*)(uintptr_t)dst;
    for (size_t i = 0; i < n; i++) p[i] = v;
    return CUDA_SUCCESS;
}

const struct {
    int code;
    const char *name, *text;
} kErrors[] = {
    {0, "CUDA_SUCCESS", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {4, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {101, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {200, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {400, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {600, "CUDA_ERROR_NOT_READY", "device not ready"},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {710, "CUDA_ERROR_ASSERT", "device-side assert triggered"},
    {719, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {801, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {999, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

} // namespace

// ---- initialization and devices -------------------------------------------

API CUresult cuInit(unsigned flags) {
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    std::call_once(g_init_once, [] {
        int r = read_config();
        if (r == CUDA_SUCCESS) {
            for (int i = 0; i < g_config.gpus; i++) {
                g_dev[i].total = g_config.memory;
                g_dev[i].primary = new Ctx();
                g_dev[i].primary->dev = i;
                g_dev[i].primary->primary = true;
            }
            fault_init();
            if (g_config.gpus == 0) r = CUDA_ERROR_NO_DEVICE;
        }
        g_init_status = r;
    });
    return g_init_status;
}

API CUresult cuDriverGetVersion(int* v) {
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    *v = kDriverVersion;
    return CUDA_SUCCESS;
}

API CUresult cuGetErrorName(CUresult e, const char** s) {
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    for (auto& x : kErrors)
        if (x.code == e) {
            *s = x.name;
            return CUDA_SUCCESS;
        }
    *s = nullptr;
    return CUDA_ERROR_INVALID_VALUE;
}

API CUresult cuGetErrorString(CUresult e, const char** s) {
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    for (auto& x : kErrors)
        if (x.code == e) {
            *s = x.text;
            return CUDA_SUCCESS;
        }
    *s = nullptr;
    return CUDA_ERROR_INVALID_VALUE;
}

API CUresult cuDeviceGetCount(int* n) {
    if (!n) return CUDA_ERROR_INVALID_VALUE;
    if (!initialized()) return CUDA_ERROR_NOT_INITIALIZED;
    *n = g_config.gpus;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    if (!initialized()) return CUDA_ERROR_NOT_INITIALIZED;
    if (!valid_device(ordinal)) return CUDA_ERROR_INVALID_DEVICE;
    *d = ordinal;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(d)) return initialized() ? CUDA_ERROR_INVALID_DEVICE : CUDA_ERROR_NOT_INITIALIZED;
    snprintf(name, (size_t)len, "minitron CPU stand-in (sm_90)");
    return CUDA_SUCCESS;
}

API CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice d) {
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(d)) return initialized() ? CUDA_ERROR_INVALID_DEVICE : CUDA_ERROR_NOT_INITIALIZED;
    *bytes = g_dev[d].total;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceComputeCapability(int* major, int* minor, CUdevice d) {
    if (!major || !minor) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(d)) return initialized() ? CUDA_ERROR_INVALID_DEVICE : CUDA_ERROR_NOT_INITIALIZED;
    *major = 9;
    *minor = 0;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice d) {
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(d)) return initialized() ? CUDA_ERROR_INVALID_DEVICE : CUDA_ERROR_NOT_INITIALIZED;
    int r = 0;
    switch (attr) {
    case 1: r = 1024; break;               // max threads per block
    case 2: case 3: r = 1024; break;       // max block dim x, y
    case 4: r = 64; break;                 // max block dim z
    case 5: r = 0x7fffffff; break;         // max grid dim x
    case 6: case 7: r = 65535; break;      // max grid dim y, z
    case 8: r = kDefaultShared; break;     // shared memory per block
    case 9: r = 65536; break;              // constant memory
    case 10: r = 32; break;                // warp size
    case 11: r = 0x7fffffff; break;        // max pitch
    case 12: r = 65536; break;             // registers per block
    case 13: r = 1980000; break;           // clock rate, kHz
    case 14: r = 512; break;               // texture alignment
    case 15: r = 1; break;                 // gpu overlap
    case 16: r = g_config.sms; break;      // multiprocessors: the CPU cores
    case 19: r = 1; break;                 // can map host memory
    case 31: r = 1; break;                 // concurrent kernels
    case 33: r = d + 1; break;             // PCI bus id
    case 36: r = 2619000; break;           // memory clock rate, kHz
    case 37: r = 5120; break;              // memory bus width, bits
    case 38: r = 50 << 20; break;          // L2 cache
    case 39: r = 2048; break;              // max threads per multiprocessor
    case 40: r = 2; break;                 // async engines
    case 41: r = 1; break;                 // unified addressing
    case 75: r = 9; break;                 // compute capability major
    case 76: r = 0; break;                 // compute capability minor
    case 78: r = 1; break;                 // stream priorities
    case 81: r = 228 << 10; break;         // shared memory per multiprocessor
    case 82: r = 65536; break;             // registers per multiprocessor
    case 83: r = 1; break;                 // managed memory
    case 95: r = 1; break;                 // cooperative launch
    case 97: r = kOptinShared; break;      // opt-in shared memory per block
    case 106: r = 32; break;               // blocks per multiprocessor
    default:
        if (attr <= 0 || attr > 140) return CUDA_ERROR_INVALID_VALUE;
    }
    *v = r;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetUuid(unsigned char* uuid, CUdevice d) {
    if (!uuid) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(d)) return initialized() ? CUDA_ERROR_INVALID_DEVICE : CUDA_ERROR_NOT_INITIALIZED;
    static const unsigned char base[16] = {'m', 'i', 'n', 'i', 't', 'r', 'o', 'n', '-', 'e', 'm', 'u', 0, 0, 0, 0};
    memcpy(uuid, base, 16);
    uuid[15] = (unsigned char)d;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetUuid_v2(unsigned char* uuid, CUdevice d) { return cuDeviceGetUuid(uuid, d); }

API CUresult cuDeviceGetPCIBusId(char* s, int len, CUdevice d) {
    if (!s || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(d)) return initialized() ? CUDA_ERROR_INVALID_DEVICE : CUDA_ERROR_NOT_INITIALIZED;
    snprintf(s, (size_t)len, "0000:%02x:00.0", d + 1);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceCanAccessPeer(int* can, CUdevice d, CUdevice peer) {
    if (!can) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(d) || !valid_device(peer)) return initialized() ? CUDA_ERROR_INVALID_DEVICE : CUDA_ERROR_NOT_INITIALIZED;
    *can = d != peer;
    return CUDA_SUCCESS;
}

// ---- contexts ---------------------------------------------------------------

API CUresult cuDevicePrimaryCtxRetain(Ctx** ctx, CUdevice d) {
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(d)) return initialized() ? CUDA_ERROR_INVALID_DEVICE : CUDA_ERROR_NOT_INITIALIZED;
    g_dev[d].primary->refs++;
    *ctx = g_dev[d].primary;
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    if (!valid_device(d)) return initialized() ? CUDA_ERROR_INVALID_DEVICE : CUDA_ERROR_NOT_INITIALIZED;
    Ctx* c = g_dev[d].primary;
    if (c->refs.load() <= 0) return CUDA_ERROR_INVALID_CONTEXT;
    c->refs--;
    return CUDA_SUCCESS;
}
API CUresult cuDevicePrimaryCtxRelease(CUdevice d) { return cuDevicePrimaryCtxRelease_v2(d); }

// A reset frees the device's memory and clears a sticky error, as the real
// one destroys and recreates the primary context.
API CUresult cuDevicePrimaryCtxReset_v2(CUdevice d) {
    if (!valid_device(d)) return initialized() ? CUDA_ERROR_INVALID_DEVICE : CUDA_ERROR_NOT_INITIALIZED;
    mem_drop(d);
    g_dev[d].primary->sticky = 0;
    g_dev[d].primary->last_kernel[0] = 0;
    return CUDA_SUCCESS;
}
API CUresult cuDevicePrimaryCtxReset(CUdevice d) { return cuDevicePrimaryCtxReset_v2(d); }

API CUresult cuDevicePrimaryCtxGetState(CUdevice d, unsigned* flags, int* active) {
    if (!flags || !active) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(d)) return initialized() ? CUDA_ERROR_INVALID_DEVICE : CUDA_ERROR_NOT_INITIALIZED;
    *flags = 0;
    *active = g_dev[d].primary->refs.load() > 0;
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice d, unsigned) {
    return valid_device(d) ? CUDA_SUCCESS : initialized() ? CUDA_ERROR_INVALID_DEVICE : CUDA_ERROR_NOT_INITIALIZED;
}
API CUresult cuDevicePrimaryCtxSetFlags(CUdevice d, unsigned f) { return cuDevicePrimaryCtxSetFlags_v2(d, f); }

API CUresult cuCtxCreate_v2(Ctx** ctx, unsigned, CUdevice d) {
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(d)) return initialized() ? CUDA_ERROR_INVALID_DEVICE : CUDA_ERROR_NOT_INITIALIZED;
    Ctx* c = new Ctx();
    c->dev = d;
    c->primary = false;
    c->refs = 1;
    tls_ctx = c;
    *ctx = c;
    return CUDA_SUCCESS;
}

API CUresult cuCtxDestroy_v2(Ctx* c) {
    if (!valid(c, kCtxMagic) || c->primary) return CUDA_ERROR_INVALID_CONTEXT;
    if (tls_ctx == c) tls_ctx = nullptr;
    c->magic = 0; // leaked: other threads may still name it
    return CUDA_SUCCESS;
}

API CUresult cuCtxSetCurrent(Ctx* c) {
    if (!initialized()) return CUDA_ERROR_NOT_INITIALIZED;
    if (c && !valid(c, kCtxMagic)) return CUDA_ERROR_INVALID_CONTEXT;
    tls_ctx = c;
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetCurrent(Ctx** c) {
    if (!c) return CUDA_ERROR_INVALID_VALUE;
    if (!initialized()) return CUDA_ERROR_NOT_INITIALIZED;
    *c = tls_ctx;
    return CUDA_SUCCESS;
}

API CUresult cuCtxPushCurrent_v2(Ctx* c) {
    if (!initialized()) return CUDA_ERROR_NOT_INITIALIZED;
    if (!valid(c, kCtxMagic)) return CUDA_ERROR_INVALID_CONTEXT;
    tls_stack.push_back(tls_ctx);
    tls_ctx = c;
    return CUDA_SUCCESS;
}

API CUresult cuCtxPopCurrent_v2(Ctx** c) {
    if (!initialized()) return CUDA_ERROR_NOT_INITIALIZED;
    if (!tls_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    if (c) *c = tls_ctx;
    tls_ctx = tls_stack.empty() ? nullptr : tls_stack.back();
    if (!tls_stack.empty()) tls_stack.pop_back();
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetDevice(CUdevice* d) {
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    if (!initialized()) return CUDA_ERROR_NOT_INITIALIZED;
    if (!tls_ctx) return CUDA_ERROR_INVALID_CONTEXT;
    *d = tls_ctx->dev;
    return CUDA_SUCCESS;
}

API CUresult cuCtxSynchronize() {
    Ctx* c;
    if (int e = current(&c)) return e;
    return check_all(c);
}

API CUresult cuCtxEnablePeerAccess(Ctx* peer, unsigned flags) {
    Ctx* c;
    if (int e = current(&c)) return e;
    if (!valid(peer, kCtxMagic) || flags != 0) return CUDA_ERROR_INVALID_VALUE;
    return CUDA_SUCCESS;
}

// ---- memory -----------------------------------------------------------------

API CUresult cuMemGetInfo_v2(size_t* free_, size_t* total) {
    if (!free_ || !total) return CUDA_ERROR_INVALID_VALUE;
    Ctx* c;
    if (int e = current(&c)) return e;
    uint64_t t = g_dev[c->dev].total, u = mem_used(c->dev);
    *total = t;
    *free_ = u < t ? t - u : 0;
    return CUDA_SUCCESS;
}

API CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    Ctx* c;
    if (int e = current(&c)) return e;
    uintptr_t q;
    int r = mem_alloc(c->dev, bytes, g_dev[c->dev].total, &q);
    if (r == CUDA_SUCCESS) *p = q;
    return r;
}

API CUresult cuMemFree_v2(CUdeviceptr p) {
    Ctx* c;
    if (int e = current(&c)) return e;
    if (p == 0) return CUDA_SUCCESS;
    int r = mem_free((uintptr_t)p, nullptr);
    if (r != CUDA_SUCCESS) emu_log("cuMemFree_v2: %#llx is not the start of a live device allocation", p);
    if (int e = check_all(c)) return e;
    return r;
}

API CUresult cuMemAllocHost_v2(void** p, size_t bytes) {
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    Ctx* c;
    if (int e = current(&c)) return e;
    return mem_alloc_host(bytes, p);
}

API CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned) { return cuMemAllocHost_v2(p, bytes); }

API CUresult cuMemFreeHost(void* p) {
    Ctx* c;
    if (int e = current(&c)) return e;
    int r = mem_free_host(p);
    if (r != CUDA_SUCCESS) emu_log("cuMemFreeHost: %p is not the start of a live page-locked allocation", p);
    return r;
}

API CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr* d, void* p, unsigned flags) {
    if (!d || flags != 0) return CUDA_ERROR_INVALID_VALUE;
    Ctx* c;
    if (int e = current(&c)) return e;
    if (!mem_range((uintptr_t)p, 1)) return CUDA_ERROR_INVALID_VALUE;
    *d = (uintptr_t)p;
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    return copy((void*)(uintptr_t)dst, src, n, true, false, "cuMemcpyHtoD_v2");
}
API CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    return copy(dst, (const void*)(uintptr_t)src, n, false, true, "cuMemcpyDtoH_v2");
}
API CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    return copy((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n, true, true, "cuMemcpyDtoD_v2");
}
API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, void* s) {
    if (int e = check_stream(s)) return e;
    return copy((void*)(uintptr_t)dst, src, n, true, false, "cuMemcpyHtoDAsync_v2");
}
API CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, void* s) {
    if (int e = check_stream(s)) return e;
    return copy(dst, (const void*)(uintptr_t)src, n, false, true, "cuMemcpyDtoHAsync_v2");
}
API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void* s) {
    if (int e = check_stream(s)) return e;
    return copy((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n, true, true, "cuMemcpyDtoDAsync_v2");
}
API CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    return copy((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n, false, false, "cuMemcpy");
}
API CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, void* s) {
    if (int e = check_stream(s)) return e;
    return copy((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n, false, false, "cuMemcpyAsync");
}
API CUresult cuMemcpyPeer(CUdeviceptr dst, Ctx*, CUdeviceptr src, Ctx*, size_t n) {
    return copy((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n, true, true, "cuMemcpyPeer");
}
API CUresult cuMemcpyPeerAsync(CUdeviceptr dst, Ctx*, CUdeviceptr src, Ctx*, size_t n, void* s) {
    if (int e = check_stream(s)) return e;
    return copy((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n, true, true, "cuMemcpyPeerAsync");
}

API CUresult cuMemsetD8_v2(CUdeviceptr p, unsigned char v, size_t n) { return fill<uint8_t>(p, v, n, "cuMemsetD8_v2"); }
API CUresult cuMemsetD16_v2(CUdeviceptr p, unsigned short v, size_t n) { return fill<uint16_t>(p, v, n, "cuMemsetD16_v2"); }
API CUresult cuMemsetD32_v2(CUdeviceptr p, unsigned v, size_t n) { return fill<uint32_t>(p, v, n, "cuMemsetD32_v2"); }
API CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, void* s) {
    if (int e = check_stream(s)) return e;
    return fill<uint8_t>(p, v, n, "cuMemsetD8Async");
}
API CUresult cuMemsetD16Async(CUdeviceptr p, unsigned short v, size_t n, void* s) {
    if (int e = check_stream(s)) return e;
    return fill<uint16_t>(p, v, n, "cuMemsetD16Async");
}
API CUresult cuMemsetD32Async(CUdeviceptr p, unsigned v, size_t n, void* s) {
    if (int e = check_stream(s)) return e;
    return fill<uint32_t>(p, v, n, "cuMemsetD32Async");
}

// ---- streams and events -----------------------------------------------------

API CUresult cuStreamCreate(Stream** s, unsigned flags) {
    if (!s || flags > 1) return CUDA_ERROR_INVALID_VALUE;
    Ctx* c;
    if (int e = current(&c)) return e;
    Stream* st = new Stream();
    st->ctx = c;
    *s = st;
    return CUDA_SUCCESS;
}

API CUresult cuStreamCreateWithPriority(Stream** s, unsigned flags, int) { return cuStreamCreate(s, flags); }

API CUresult cuStreamDestroy_v2(Stream* s) {
    if (!valid(s, kStreamMagic)) return CUDA_ERROR_INVALID_HANDLE;
    s->magic = 0;
    delete s;
    return CUDA_SUCCESS;
}
API CUresult cuStreamDestroy(Stream* s) { return cuStreamDestroy_v2(s); }

API CUresult cuStreamSynchronize(Stream* s) {
    if (int e = check_stream(s)) return e;
    Ctx* c;
    if (int e = current(&c)) return e;
    return check_all(c);
}

API CUresult cuStreamQuery(Stream* s) { return cuStreamSynchronize(s); }

API CUresult cuStreamWaitEvent(Stream* s, Event* ev, unsigned) {
    if (int e = check_stream(s)) return e;
    if (!valid(ev, kEventMagic)) return CUDA_ERROR_INVALID_HANDLE;
    Ctx* c;
    return current(&c);
}

API CUresult cuEventCreate(Event** ev, unsigned flags) {
    if (!ev || flags > 0xf) return CUDA_ERROR_INVALID_VALUE;
    Ctx* c;
    if (int e = current(&c)) return e;
    Event* x = new Event();
    x->flags = flags;
    *ev = x;
    return CUDA_SUCCESS;
}

API CUresult cuEventRecord(Event* ev, Stream* s) {
    if (!valid(ev, kEventMagic)) return CUDA_ERROR_INVALID_HANDLE;
    if (int e = check_stream(s)) return e;
    Ctx* c;
    if (int e = current(&c)) return e;
    ev->t = std::chrono::steady_clock::now();
    ev->recorded = true;
    return CUDA_SUCCESS;
}

API CUresult cuEventSynchronize(Event* ev) {
    if (!valid(ev, kEventMagic)) return CUDA_ERROR_INVALID_HANDLE;
    Ctx* c;
    if (int e = current(&c)) return e;
    return check_all(c);
}

API CUresult cuEventQuery(Event* ev) {
    if (!valid(ev, kEventMagic)) return CUDA_ERROR_INVALID_HANDLE;
    return CUDA_SUCCESS;
}

API CUresult cuEventElapsedTime(float* ms, Event* a, Event* b) {
    if (!ms) return CUDA_ERROR_INVALID_VALUE;
    if (!valid(a, kEventMagic) || !valid(b, kEventMagic)) return CUDA_ERROR_INVALID_HANDLE;
    if (!a->recorded || !b->recorded || (a->flags & 2) || (b->flags & 2)) return CUDA_ERROR_INVALID_HANDLE;
    *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
    return CUDA_SUCCESS;
}
API CUresult cuEventElapsedTime_v2(float* ms, Event* a, Event* b) { return cuEventElapsedTime(ms, a, b); }

API CUresult cuEventDestroy_v2(Event* ev) {
    if (!valid(ev, kEventMagic)) return CUDA_ERROR_INVALID_HANDLE;
    ev->magic = 0;
    delete ev;
    return CUDA_SUCCESS;
}
API CUresult cuEventDestroy(Event* ev) { return cuEventDestroy_v2(ev); }

// ---- modules and launches ---------------------------------------------------

// open_image loads a module's shared object from a memfd (or a temporary
// file), kept open until the module is unloaded: dlopen knows modules by
// path, and a reused path would hand back an earlier module.
static void* open_image(const void* data, size_t n, int* fdOut, std::string* pathOut, std::string* err) {
    int fd = memfd_create("minitron-emu-module", MFD_CLOEXEC);
    std::string path;
    if (fd < 0) {
        const char* dir = getenv("TMPDIR");
        std::string t = std::string(dir && *dir ? dir : "/tmp") + "/minitron-emu-moduleXXXXXX";
        std::vector<char> buf(t.begin(), t.end());
        buf.push_back(0);
        fd = mkstemp(buf.data());
        if (fd < 0) {
            *err = std::string("cannot create a file for the module: ") + strerror(errno);
            return nullptr;
        }
        path = buf.data();
        *pathOut = path;
    }
    const char* p = (const char*)data;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w <= 0) {
            *err = std::string("cannot write the module: ") + strerror(errno);
            close(fd);
            if (!path.empty()) unlink(path.c_str());
            return nullptr;
        }
        p += w;
        left -= (size_t)w;
    }
    if (path.empty()) path = "/proc/self/fd/" + std::to_string(fd);
    void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        *err = dlerror();
        close(fd);
        if (!pathOut->empty()) unlink(pathOut->c_str());
        return nullptr;
    }
    *fdOut = fd;
    return h;
}

API CUresult cuModuleLoadData(Module** m, const void* image) {
    if (!m || !image) return CUDA_ERROR_INVALID_VALUE;
    Ctx* c;
    if (int e = current(&c)) return e;
    const unsigned char* img = (const unsigned char*)image;
    if (memcmp(img, EMU_IMAGE_MAGIC, EMU_IMAGE_MAGIC_LEN) != 0) {
        emu_log("cuModuleLoadData: the image is not one the stand-in NVRTC compiled; these stand-ins run only "
                "kernels their own NVRTC compiled (a kernel cache shared with a real GPU? point MINITRON_CACHE elsewhere)");
        return CUDA_ERROR_INVALID_IMAGE;
    }
    uint64_t n;
    memcpy(&n, img + 24, 8);
    std::string err, path;
    int fd = -1;
    void* h = open_image(img + EMU_IMAGE_HEADER, n, &fd, &path, &err);
    if (!h) {
        emu_log("cuModuleLoadData: cannot load the module: %s", err.c_str());
        return CUDA_ERROR_INVALID_IMAGE;
    }
    auto init = (int (*)(const EmuRuntime*))dlsym(h, "__emu_module_init");
    EmuRuntime rt;
    sched_runtime(&rt);
    if (!init || init(&rt) != EMU_ABI_VERSION) {
        emu_log("cuModuleLoadData: the module was compiled by other stand-ins (interface version differs); "
                "delete the kernel cache (MINITRON_CACHE) and rerun");
        dlclose(h);
        close(fd);
        if (!path.empty()) unlink(path.c_str());
        return CUDA_ERROR_INVALID_IMAGE;
    }
    Module* mod = new Module();
    mod->handle = h;
    mod->fd = fd;
    mod->path = path;
    mod->ctx = c;
    *m = mod;
    return CUDA_SUCCESS;
}

API CUresult cuModuleLoadDataEx(Module** m, const void* image, unsigned, void*, void**) { return cuModuleLoadData(m, image); }

API CUresult cuModuleUnload(Module* m) {
    if (!valid(m, kModMagic)) return CUDA_ERROR_INVALID_HANDLE;
    m->magic = 0;
    dlclose(m->handle);
    close(m->fd);
    if (!m->path.empty()) unlink(m->path.c_str());
    delete m;
    return CUDA_SUCCESS;
}

API CUresult cuModuleGetFunction(Function** f, Module* m, const char* name) {
    if (!f || !name) return CUDA_ERROR_INVALID_VALUE;
    if (!valid(m, kModMagic)) return CUDA_ERROR_INVALID_HANDLE;
    Ctx* c;
    if (int e = current(&c)) return e;
    std::string n(name);
    auto entry = (void (*)(void**))dlsym(m->handle, ("__emu_kernel_" + n).c_str());
    auto sig = (const char* (*)())dlsym(m->handle, ("__emu_sig_" + n).c_str());
    if (!entry || !sig) return CUDA_ERROR_NOT_FOUND;
    Function* fn = new Function();
    fn->mod = m;
    fn->name = n;
    fn->entry = entry;
    fn->sig = sig();
    *f = fn;
    return CUDA_SUCCESS;
}

API CUresult cuFuncSetAttribute(Function* f, int attr, int value) {
    if (!valid(f, kFunMagic)) return CUDA_ERROR_INVALID_HANDLE;
    switch (attr) {
    case 8: // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        if (value < 0 || value > kOptinShared) return CUDA_ERROR_INVALID_VALUE;
        f->max_dynamic = value;
        return CUDA_SUCCESS;
    case 9: // preferred shared memory carveout
        return value >= -1 && value <= 100 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_ERROR_INVALID_VALUE;
}

API CUresult cuFuncGetAttribute(int* v, int attr, Function* f) {
    if (!v) return CUDA_ERROR_INVALID_VALUE;
    if (!valid(f, kFunMagic)) return CUDA_ERROR_INVALID_HANDLE;
    switch (attr) {
    case 0: *v = 1024; break;             // max threads per block
    case 4: *v = 32; break;               // registers
    case 5: case 6: *v = 90; break;       // PTX and binary version
    case 8: *v = f->max_dynamic; break;
    default: *v = 0;
    }
    return CUDA_SUCCESS;
}

API CUresult cuLaunchKernel(Function* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                            unsigned shared, void* stream, void** params, void** extra) {
    if (!valid(f, kFunMagic)) return CUDA_ERROR_INVALID_HANDLE;
    Ctx* c;
    if (int e = current(&c)) return e;
    if (int e = check_stream(stream)) return e;
    const char* name = f->name.c_str();
    if (gx == 0 || gy == 0 || gz == 0 || gx > 0x7fffffffu || gy > 65535 || gz > 65535) {
        emu_log("cuLaunchKernel: kernel %s: grid (%u,%u,%u) is outside (1..2^31-1, 1..65535, 1..65535)", name, gx, gy, gz);
        return CUDA_ERROR_INVALID_VALUE;
    }
    uint64_t threads = (uint64_t)bx * by * bz;
    if (bx == 0 || by == 0 || bz == 0 || bx > 1024 || by > 1024 || bz > 64 || threads > 1024) {
        emu_log("cuLaunchKernel: kernel %s: block (%u,%u,%u) is empty or has more than 1024 threads", name, bx, by, bz);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if ((int)shared > f->max_dynamic || shared > (unsigned)kOptinShared) {
        emu_log("cuLaunchKernel: kernel %s: %u bytes of dynamic shared memory, above its limit of %d (raise it with "
                "cuFuncSetAttribute, up to %d)", name, shared, f->max_dynamic, kOptinShared);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (extra) {
        emu_log("cuLaunchKernel: kernel %s: parameters through `extra` are not supported by the stand-ins; use kernelParams", name);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (!params && !f->sig.empty()) return CUDA_ERROR_INVALID_VALUE;
    {
        std::lock_guard<std::mutex> g(c->mu);
        snprintf(c->last_kernel, sizeof c->last_kernel, "%s", name);
    }
    Launch L;
    L.name = name;
    L.entry = f->entry;
    L.params = params;
    L.grid = dim3(gx, gy, gz);
    L.block = dim3(bx, by, bz);
    L.shared = shared;
    int r = run_launch(&L);
    if (r) return fail_ctx(c, r);
    // The allocations the kernel was handed: check their canaries now, so a
    // damage is blamed on this kernel.
    std::string after = std::string("kernel ") + name;
    for (size_t i = 0; i < f->sig.size(); i++)
        if (f->sig[i] == 'p') {
            uintptr_t p;
            memcpy(&p, params[i], sizeof p);
            if (p && !mem_check(p, -1, after.c_str())) return fail_ctx(c, CUDA_ERROR_ILLEGAL_ADDRESS);
        }
    return CUDA_SUCCESS;
}

// ---- for the other stand-ins (emu.h) ----------------------------------------

EMU_EXPORT_API void emu_parallel_for(uint64_t n, void (*fn)(void*, uint64_t), void* ctx) { parallel_for(n, fn, ctx); }

EMU_EXPORT_API int emu_check_range(const void* p, size_t bytes, const char* op, const char* what) {
    if (bytes == 0 || mem_range((uintptr_t)p, bytes)) return 1;
    emu_log("%s: %s [%p, +%zu bytes) is not inside one device allocation", op, what, p, bytes);
    return 0;
}

EMU_EXPORT_API int emu_context_error(void) {
    Ctx* c;
    return current(&c);
}

EMU_EXPORT_API void emu_set_context_error(int code) {
    if (Ctx* c = tls_ctx) fail_ctx(c, code);
}

EMU_EXPORT_API const char* emu_current_op(const char* op) { return set_current_op(op); }
