// Device memory: host memory with canaries before and after every
// allocation, its end placed against a PROT_NONE guard page so that reads
// and writes past it fault at once; a fault inside a kernel or library
// call is reported naming it and the allocation, then the process aborts.
//
// Layout of one allocation of n bytes (p = n rounded up to 256):
//   [header page ... canary (256 bytes) | n bytes | canary to p | guard page]
// Canaries are checked after each launch (the allocations its pointer
// arguments point into), at every synchronization and at cuMemFree.
#include <dlfcn.h>
#include <errno.h>
#include <ucontext.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>

#include "driver.h"

namespace {

const size_t kPage = 4096;
const size_t kFront = 256; // canary bytes checked before an allocation
const uint8_t kGarbage = 0xff;

struct Alloc {
    uintptr_t map;     // mapping start
    size_t map_len;
    size_t size;       // bytes asked for
    size_t padded;     // size rounded up to 256
    int dev;           // -1: page-locked host memory
    uint64_t id;
};

std::mutex g_mu;
std::map<uintptr_t, Alloc> g_allocs; // by user address
uint64_t g_next_id = 1;
uint64_t g_used[64];

inline uint8_t canary(size_t i) { return (uint8_t)(0xa5 ^ (i * 0x3b)); }

void fill_canaries(uintptr_t p, const Alloc& a) {
    uint8_t* f = (uint8_t*)(p - kFront);
    for (size_t i = 0; i < kFront; i++) f[i] = canary(i);
    uint8_t* t = (uint8_t*)(p + a.size);
    for (size_t i = 0; i < a.padded - a.size; i++) t[i] = canary(i);
}

// damaged returns the offset (from p) of the first damaged canary byte, or
// 0 with ok set.
long damaged(uintptr_t p, const Alloc& a, bool* ok) {
    *ok = true;
    const uint8_t* f = (const uint8_t*)(p - kFront);
    for (size_t i = 0; i < kFront; i++)
        if (f[i] != canary(i)) {
            *ok = false;
            return (long)i - (long)kFront;
        }
    const uint8_t* t = (const uint8_t*)(p + a.size);
    for (size_t i = 0; i < a.padded - a.size; i++)
        if (t[i] != canary(i)) {
            *ok = false;
            return (long)(a.size + i);
        }
    return 0;
}

const char* kind(const Alloc& a) { return a.dev < 0 ? "page-locked host allocation" : "device allocation"; }

// lookup returns the allocation holding p (or whose guard page holds p when
// guard is set); g_mu held.
std::map<uintptr_t, Alloc>::iterator lookup(uintptr_t p, bool guard) {
    auto it = g_allocs.upper_bound(p);
    if (it == g_allocs.begin()) return g_allocs.end();
    --it;
    uintptr_t end = it->first + (guard ? it->second.padded + kPage : it->second.size);
    if (p >= it->first && p < end) return it;
    return g_allocs.end();
}

bool check_one(uintptr_t p, const Alloc& a, const char* after) {
    bool ok;
    long off = damaged(p, a, &ok);
    if (ok) return true;
    if (off < 0)
        emu_log("%s wrote before the start of %s #%llu (%zu bytes at %#lx): at byte %ld", after, kind(a),
                (unsigned long long)a.id, a.size, (unsigned long)p, off);
    else
        emu_log("%s wrote past the end of %s #%llu (%zu bytes at %#lx): at byte %ld, %ld past its end", after, kind(a),
                (unsigned long long)a.id, a.size, (unsigned long)p, off, off - (long)a.size + 1);
    fill_canaries(p, a); // report each damage once
    return false;
}

int do_alloc(int dev, size_t bytes, uint64_t limit, uintptr_t* out) {
    if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    size_t padded = (bytes + 255) & ~(size_t)255;
    if (padded < bytes) return CUDA_ERROR_OUT_OF_MEMORY;
    size_t body = (padded + kPage - 1) & ~(kPage - 1);
    size_t len = kPage + body + kPage;
    {
        std::lock_guard<std::mutex> g(g_mu);
        if (dev >= 0) {
            if (g_used[dev] + padded > limit || g_used[dev] + padded < g_used[dev]) return CUDA_ERROR_OUT_OF_MEMORY;
            g_used[dev] += padded; // reserved; given back below on failure
        }
    }
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        std::lock_guard<std::mutex> g(g_mu);
        if (dev >= 0) g_used[dev] -= padded;
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    uintptr_t map = (uintptr_t)m;
    uintptr_t guard = map + len - kPage;
    mprotect((void*)guard, kPage, PROT_NONE);
    uintptr_t p = guard - padded;
    Alloc a{map, len, bytes, padded, dev, 0};
    memset((void*)p, kGarbage, bytes); // device memory starts as garbage, never zeros
    fill_canaries(p, a);
    std::lock_guard<std::mutex> g(g_mu);
    a.id = g_next_id++;
    g_allocs[p] = a;
    *out = p;
    return CUDA_SUCCESS;
}

} // namespace

int mem_alloc(int dev, size_t bytes, uint64_t limit, uintptr_t* out) { return do_alloc(dev, bytes, limit, out); }

int mem_alloc_host(size_t bytes, void** out) {
    uintptr_t p;
    int r = do_alloc(-1, bytes, UINT64_MAX, &p);
    if (r == CUDA_SUCCESS) *out = (void*)p;
    return r;
}

static int free_kind(uintptr_t p, bool host, int* dev) {
    Alloc a;
    {
        std::lock_guard<std::mutex> g(g_mu);
        auto it = g_allocs.find(p);
        if (it == g_allocs.end() || (it->second.dev < 0) != host) return CUDA_ERROR_INVALID_VALUE;
        a = it->second;
        check_one(p, a, "a kernel or copy");
        g_allocs.erase(it);
        if (a.dev >= 0) g_used[a.dev] -= a.padded;
    }
    if (dev) *dev = a.dev;
    munmap((void*)a.map, a.map_len);
    return CUDA_SUCCESS;
}

int mem_free(uintptr_t p, int* dev) { return free_kind(p, false, dev); }
int mem_free_host(void* p) { return free_kind((uintptr_t)p, true, nullptr); }

uint64_t mem_used(int dev) {
    std::lock_guard<std::mutex> g(g_mu);
    return g_used[dev];
}

bool mem_range(uintptr_t p, size_t n) {
    std::lock_guard<std::mutex> g(g_mu);
    auto it = lookup(p, false);
    return it != g_allocs.end() && n <= it->first + it->second.size - p;
}

bool mem_check(uintptr_t p, int dev, const char* after) {
    std::lock_guard<std::mutex> g(g_mu);
    if (p != 0) {
        auto it = lookup(p, false);
        return it == g_allocs.end() || check_one(it->first, it->second, after);
    }
    bool ok = true;
    for (auto& e : g_allocs)
        if (dev < 0 || e.second.dev == dev) ok &= check_one(e.first, e.second, after);
    return ok;
}

void mem_drop(int dev) {
    std::lock_guard<std::mutex> g(g_mu);
    for (auto it = g_allocs.begin(); it != g_allocs.end();) {
        if (it->second.dev == dev) {
            munmap((void*)it->second.map, it->second.map_len);
            g_used[dev] -= it->second.padded;
            it = g_allocs.erase(it);
        } else {
            ++it;
        }
    }
}

void mem_describe(uintptr_t addr, char* buf, size_t n) {
    // Called from the fault handler: do not wait for the lock.
    if (!g_mu.try_lock()) {
        snprintf(buf, n, "address %#lx", (unsigned long)addr);
        return;
    }
    auto it = lookup(addr, true);
    if (it != g_allocs.end()) {
        const Alloc& a = it->second;
        snprintf(buf, n, "address %#lx, byte %ld of %s #%llu (%zu bytes at %#lx), %ld past its end", (unsigned long)addr,
                 (long)(addr - it->first), kind(a), (unsigned long long)a.id, a.size, (unsigned long)it->first,
                 (long)(addr - it->first - a.size + 1));
    } else {
        // Just below an allocation (its header page)?
        auto nx = g_allocs.upper_bound(addr);
        if (nx != g_allocs.end() && nx->second.map <= addr)
            snprintf(buf, n, "address %#lx, %ld bytes before %s #%llu (%zu bytes at %#lx)", (unsigned long)addr,
                     (long)(nx->first - addr), kind(nx->second), (unsigned long long)nx->second.id, nx->second.size,
                     (unsigned long)nx->first);
        else
            snprintf(buf, n, "address %#lx, outside every live allocation (a wild or freed pointer)", (unsigned long)addr);
    }
    g_mu.unlock();
}

// ---- the fault handler ----------------------------------------------------

static struct sigaction g_old_segv, g_old_bus, g_old_ill;

static void write_err(const char* s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(2, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void on_fault(int sig, siginfo_t* info, void* uc) {
    uintptr_t addr = (uintptr_t)info->si_addr;
    char what[256];
    bool overflow;
    if (fault_context(addr, what, sizeof what, &overflow)) {
        char msg[768];
        if (overflow) {
            snprintf(msg, sizeof msg,
                     "minitron emu: %s: stack overflow (a fiber's stack is %zu bytes; raise MINITRON_EMU_STACK)\n", what,
                     g_config.stack);
        } else {
            char where[320], code[256] = "";
#if defined(__x86_64__)
            uintptr_t pc = (uintptr_t)((ucontext_t*)uc)->uc_mcontext.gregs[REG_RIP];
            Dl_info di;
            if (dladdr((void*)pc, &di) && di.dli_sname)
                snprintf(code, sizeof code, " in %s+%#lx", di.dli_sname, (unsigned long)(pc - (uintptr_t)di.dli_saddr));
            else
                snprintf(code, sizeof code, " at pc %#lx", (unsigned long)pc);
#endif
            if (sig == SIGILL) {
                // Kernels are compiled to trap on misaligned accesses.
                snprintf(msg, sizeof msg,
                         "minitron emu: %s: misaligned memory access%s (an access of n bytes at an address that is not "
                         "a multiple of n; CUDA_ERROR_MISALIGNED_ADDRESS on a GPU)\n",
                         what, code);
            } else {
                mem_describe(addr, where, sizeof where);
                snprintf(msg, sizeof msg, "minitron emu: %s: invalid memory access (%s%s) at %s\n", what,
                         sig == SIGBUS ? "bus error" : "segmentation fault", code, where);
            }
        }
        write_err(msg);
        signal(SIGABRT, SIG_DFL);
        abort();
    }
    // Not ours: hand it to the handler installed before (the Go runtime's).
    struct sigaction* old = sig == SIGBUS ? &g_old_bus : sig == SIGILL ? &g_old_ill : &g_old_segv;
    if (old->sa_flags & SA_SIGINFO) {
        old->sa_sigaction(sig, info, uc);
        return;
    }
    if (old->sa_handler == SIG_IGN) return;
    if (old->sa_handler == SIG_DFL) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    old->sa_handler(sig);
}

void fault_init() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
        sigfillset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &g_old_segv);
        sigaction(SIGBUS, &sa, &g_old_bus);
        sigaction(SIGILL, &sa, &g_old_ill);
    });
}
