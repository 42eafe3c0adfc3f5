// Kernel execution: blocks spread over worker threads (the launching
// thread included), a block's threads as fibers on one worker that meet at
// barriers, warps in lock-step at shuffles and warp barriers.
//
// Fibers: each runs on a stack region of g_config.stack bytes aligned to
// its size, with a PROT_NONE guard page at the bottom and its EmuThread at
// the top, so kernel code finds its thread from the stack pointer. A
// thread that returns without ever waiting gives its region back at once,
// so kernels that never synchronise touch one stack per worker.
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <condition_variable>
#include <thread>
#include <vector>

#include "driver.h"

#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
#define EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

void Launch::fail(int code, const std::string& msg) {
    int zero = 0;
    if (error.compare_exchange_strong(zero, code)) {
        std::lock_guard<std::mutex> g(mu);
        message = msg;
    }
}

// ---- context switch -------------------------------------------------------

#if EMU_ASM_SWITCH
// emu_switch saves the callee-saved registers on the current stack, stores
// the stack pointer in *from, and resumes the stack to (saved the same way,
// or prepared by start). MXCSR and the x87 control word, callee-saved too,
// are shared by a block's fibers (no kernel code changes them, and reading
// MXCSR costs more than the rest of the switch): run_block restores them
// when the block ends.
extern "C" void emu_switch(void** from, void* to);
extern "C" void emu_fiber_boot();
__asm__(
    ".text\n"
    ".p2align 4\n"
    ".globl emu_switch\n"
    ".hidden emu_switch\n"
    ".type emu_switch,@function\n"
    "emu_switch:\n"
    "    pushq %rbp\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    movq %rsp, (%rdi)\n"
    "    movq %rsi, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbx\n"
    "    popq %rbp\n"
    "    ret\n"
    ".size emu_switch, .-emu_switch\n"
    ".p2align 4\n"
    ".globl emu_fiber_boot\n"
    ".hidden emu_fiber_boot\n"
    ".type emu_fiber_boot,@function\n"
    "emu_fiber_boot:\n"
    "    movq %r12, %rdi\n"
    "    callq *%r13\n"
    "    ud2\n"
    ".size emu_fiber_boot, .-emu_fiber_boot\n");
#define SWITCH(from_slot, to) emu_switch((from_slot), (to))
#else
#define SWITCH(from_slot, to) swapcontext((ucontext_t*)*(from_slot), (ucontext_t*)(to))
#endif

// ---- workers --------------------------------------------------------------

enum : uint8_t { T_NEW, T_READY, T_WAIT_WARP, T_WAIT_BLOCK, T_DONE };

static const size_t kGuard = 4096;
static const size_t kSmemCanary = 64;
static const size_t kMaxShared = 227 << 10;

struct Worker {
    void* sched_sp = nullptr;
#if !EMU_ASM_SWITCH
    ucontext_t sched_ctx;
#endif
    std::vector<char*> free_regions;
    std::vector<std::pair<char*, size_t>> chunks;
    uint8_t state[1024];
    unsigned wait_gen[1024];
    EmuThread* th[1024];
    EmuBlock block;
    EmuWarp warps[EMU_MAX_WARPS];
    char* smem = nullptr; // canary | dynamic shared memory | canary
    char* scratch = nullptr;
    Launch* launch = nullptr;
    uint64_t block_id = 0;
    uint64_t blocks_run = 0;     // for EmuBlock::serial
    unsigned nthreads = 0;       // in the running block
    EmuThread* exited = nullptr; // the thread that just returned
};

static __thread Worker* tls_worker __attribute__((tls_model("initial-exec")));
static __thread const char* tls_op __attribute__((tls_model("initial-exec")));

const char* set_current_op(const char* op) {
    const char* old = tls_op;
    tls_op = op;
    return old;
}

static void* map_or_die(size_t n, const char* what) {
    void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        emu_log("cannot map %zu bytes for %s: %s", n, what, strerror(errno));
        abort();
    }
    return p;
}

static Worker* get_worker() {
    Worker* w = tls_worker;
    if (w) return w;
    w = new Worker();
    w->smem = (char*)map_or_die(kMaxShared + 4 * kSmemCanary, "shared memory");
    w->scratch = (char*)map_or_die((size_t)EMU_WARP_SCRATCH * EMU_MAX_WARPS, "warp scratch");
    for (int i = 0; i < EMU_MAX_WARPS; i++) w->warps[i].scratch = w->scratch + (size_t)i * EMU_WARP_SCRATCH;
    w->block.warps = w->warps;
#if !EMU_ASM_SWITCH
    w->sched_sp = &w->sched_ctx;
#endif
    tls_worker = w;
    return w;
}

// new_region returns a free stack region, mapping a chunk of 32 more when
// none is left.
static char* new_region(Worker* w) {
    if (!w->free_regions.empty()) {
        char* r = w->free_regions.back();
        w->free_regions.pop_back();
        return r;
    }
    size_t S = g_config.stack, count = 32;
    char* raw = (char*)map_or_die((count + 1) * S, "fiber stacks");
    char* start = (char*)(((uintptr_t)raw + S - 1) & ~(uintptr_t)(S - 1));
    if (start > raw) munmap(raw, start - raw);
    char* end = start + count * S;
    if (raw + (count + 1) * S > end) munmap(end, raw + (count + 1) * S - end);
    for (size_t i = 0; i < count; i++) {
        char* r = start + i * S;
        mprotect(r, kGuard, PROT_NONE);
        w->free_regions.push_back(r);
    }
    w->chunks.push_back({start, count * S});
    char* r = w->free_regions.back();
    w->free_regions.pop_back();
    return r;
}

static unsigned stack_shift() { return (unsigned)__builtin_ctzll(g_config.stack); }

static EmuThread* region_thread(char* region) { return emu_thread_of((uintptr_t)region, stack_shift()); }

// ---- barriers and thread exit (called on fibers) --------------------------

static inline void release_block(EmuBlock* b) {
    b->arrived = 0;
    b->gen++;
}
static inline void release_warp(EmuWarp* w) {
    w->arrived = 0;
    w->gen++;
}

static inline bool runnable(Worker* w, unsigned i) {
    uint8_t s = w->state[i];
    return s == T_NEW || s == T_READY || (s == T_WAIT_WARP && w->wait_gen[i] != w->warps[i >> 5].gen) ||
           (s == T_WAIT_BLOCK && w->wait_gen[i] != w->block.gen);
}

static EmuThread* start(Worker* w, unsigned i);

// yield switches from t, which now waits, straight to the next runnable
// thread after it below end, or else back to the scheduler. (Half the
// switches of going through the scheduler each time.)
static void yield(EmuThread* t, unsigned end) {
    Worker* w = (Worker*)t->worker;
    for (unsigned j = t->index + 1; j < end; j++)
        if (runnable(w, j)) {
            EmuThread* n = w->state[j] == T_NEW ? start(w, j) : w->th[j];
            w->state[j] = T_READY;
            SWITCH(&t->sp, n->sp);
            return;
        }
    SWITCH(&t->sp, w->sched_sp);
}

static void sync_block(EmuThread* t) {
    Worker* w = (Worker*)t->worker;
    EmuBlock* b = t->block;
    if (++b->arrived == b->live) {
        release_block(b); // the last to arrive goes on
        return;
    }
    w->state[t->index] = T_WAIT_BLOCK;
    w->wait_gen[t->index] = b->gen;
    if (g_config.reverse_warps) SWITCH(&t->sp, w->sched_sp); // the scheduler picks the next warp, last first
    else yield(t, w->nthreads);
}

[[noreturn]] static void thread_fail(EmuThread* t, int code, const char* msg);

static void sync_warp(EmuThread* t) {
    Worker* w = (Worker*)t->worker;
    EmuWarp* wp = &t->block->warps[t->warp];
    if ((t->wmask & wp->live_mask) != wp->live_mask) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "a warp-level operation (shuffle, vote or __syncwarp) with mask %#x while lanes %#x of the warp run: "
                 "the stand-ins emulate whole warps only",
                 t->wmask, wp->live_mask);
        thread_fail(t, CUDA_ERROR_LAUNCH_FAILED, msg);
    }
    if (++wp->arrived == wp->live) {
        release_warp(wp);
        return;
    }
    w->state[t->index] = T_WAIT_WARP;
    w->wait_gen[t->index] = wp->gen;
    unsigned end = (t->index | 31) + 1; // the warp's lanes only
    yield(t, end < w->nthreads ? end : w->nthreads);
}

// finish does the bookkeeping of t's return: returned threads count as
// arrived at every barrier.
static void finish(EmuThread* t) {
    Worker* w = (Worker*)t->worker;
    EmuBlock* b = t->block;
    EmuWarp* wp = &b->warps[t->warp];
    b->live--;
    wp->live--;
    wp->live_mask &= ~(1u << t->lane);
    if (b->arrived > 0 && b->arrived == b->live) release_block(b);
    if (wp->arrived > 0 && wp->arrived == wp->live) release_warp(wp);
    w->state[t->index] = T_DONE;
    w->th[t->index] = nullptr;
}

// describe writes "kernel NAME, block (x,y,z)[ thread (x,y,z)]" into buf
// (no allocation: the fault handler uses it).
static void describe(char* buf, size_t n, Launch* L, uint64_t bid, const EmuThread* t) {
    unsigned gx = L->grid.x, gy = L->grid.y;
    int k = snprintf(buf, n, "kernel %s, block (%llu,%llu,%llu)", L->name, (unsigned long long)(bid % gx),
                     (unsigned long long)(bid / gx % gy), (unsigned long long)(bid / gx / gy));
    if (t && k > 0 && (size_t)k < n)
        snprintf(buf + k, n - k, " thread (%u,%u,%u)", t->threadIdx.x, t->threadIdx.y, t->threadIdx.z);
}

static std::string where(Launch* L, uint64_t bid, const EmuThread* t) {
    char buf[256];
    describe(buf, sizeof buf, L, bid, t);
    return buf;
}

[[noreturn]] static void thread_fail(EmuThread* t, int code, const char* msg) {
    Worker* w = (Worker*)t->worker;
    Launch* L = w->launch;
    L->fail(code, where(L, w->block_id, t) + ": " + msg);
    w->state[t->index] = T_DONE;
    w->exited = t;
    SWITCH(&t->sp, w->sched_sp);
    __builtin_trap();
}

static void init_thread(Worker* w, EmuThread* t, char* region, unsigned i);

// fiber_main runs thread t, then, on the same stack, each following thread
// that has not started yet (a kernel that never waits runs its threads one
// after the other without a switch); it returns to the scheduler when the
// next thread has started already, or at the end of the block.
static void fiber_main(EmuThread* t) {
    Worker* w = (Worker*)t->worker;
    for (;;) {
        w->launch->entry(w->launch->params);
        finish(t);
        unsigned j = t->index + 1;
        if (j < w->nthreads && w->state[j] == T_NEW && !w->launch->error.load(std::memory_order_relaxed)) {
            init_thread(w, t, (char*)t->region, j);
            w->state[j] = T_READY;
            continue;
        }
        w->exited = t;
        SWITCH(&t->sp, w->sched_sp);
        __builtin_trap(); // a finished fiber is never resumed
    }
}

#if !EMU_ASM_SWITCH
static void fiber_main_uc(unsigned hi, unsigned lo) {
    fiber_main((EmuThread*)(((uintptr_t)hi << 32) | lo));
}
#endif

void sched_runtime(EmuRuntime* rt) {
    rt->abi = EMU_ABI_VERSION;
    rt->stack_shift = stack_shift();
    rt->sync_block = sync_block;
    rt->sync_warp = sync_warp;
    rt->fail = thread_fail;
}

// init_thread makes t, the thread record of region, CUDA thread i.
static void init_thread(Worker* w, EmuThread* t, char* region, unsigned i) {
    const dim3& bd = w->block.blockDim;
    t->threadIdx.x = i % bd.x;
    t->threadIdx.y = i / bd.x % bd.y;
    t->threadIdx.z = i / bd.x / bd.y;
    t->lane = i & 31;
    t->warp = i >> 5;
    t->phase = 0;
    t->index = i;
    t->block = &w->block;
    t->worker = w;
    t->region = region;
    w->th[i] = t;
}

// start prepares thread i's fiber on a fresh region.
static EmuThread* start(Worker* w, unsigned i) {
    char* region = new_region(w);
    EmuThread* t = region_thread(region);
    init_thread(w, t, region, i);
#if EMU_ASM_SWITCH
    // The frame emu_switch pops: r15, r14, r13 (the entry), r12 (its
    // argument), rbx, rbp, and the return address emu_fiber_boot, which
    // calls fiber_main(t) on a 16-byte aligned stack.
    uintptr_t top = ((uintptr_t)t - 64) & ~(uintptr_t)15;
    uint64_t* sp = (uint64_t*)(top - 64);
    sp[0] = 0;                           // padding: keeps the entry aligned
    sp[1] = 0;                           // r15
    sp[2] = 0;                           // r14
    sp[3] = (uint64_t)(void*)fiber_main; // r13
    sp[4] = (uint64_t)t;                 // r12
    sp[5] = 0;                           // rbx
    sp[6] = 0;                           // rbp
    sp[7] = (uint64_t)(void*)emu_fiber_boot;
    t->sp = sp + 1;
#else
    ucontext_t* uc = (ucontext_t*)(((uintptr_t)t - sizeof(ucontext_t) - 64) & ~(uintptr_t)63);
    getcontext(uc);
    uc->uc_stack.ss_sp = region + kGuard;
    uc->uc_stack.ss_size = (char*)uc - (region + kGuard) - 64;
    uc->uc_link = nullptr;
    makecontext(uc, (void (*)())fiber_main_uc, 2, (unsigned)((uintptr_t)t >> 32), (unsigned)(uintptr_t)t);
    t->sp = uc;
#endif
    return t;
}

static const uint8_t kGarbage = 0xff; // NaN in float32 and bfloat16

static inline uint8_t canary_byte(size_t i) { return (uint8_t)(0x5a + i * 0x3b); }

static void run_block(Worker* w, Launch* L, uint64_t bid) {
    EmuBlock& b = w->block;
    unsigned gx = L->grid.x, gy = L->grid.y;
    b.blockIdx.x = (unsigned)(bid % gx);
    b.blockIdx.y = (unsigned)(bid / gx % gy);
    b.blockIdx.z = (unsigned)(bid / gx / gy);
    b.blockDim = L->block;
    b.gridDim = L->grid;
    b.serial = ++w->blocks_run;
    unsigned n = L->block.x * L->block.y * L->block.z;
    unsigned nwarps = (n + 31) / 32;
    for (unsigned i = 0; i < nwarps; i++) {
        EmuWarp& wp = w->warps[i];
        unsigned lanes = n - 32 * i < 32 ? n - 32 * i : 32;
        wp.live = (int)lanes;
        wp.live_mask = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
        wp.arrived = 0;
        wp.gen = 0;
        memset(wp.slot, 0xff, sizeof wp.slot); // no vote sequence number: stale values never count
    }
    b.live = (int)n;
    b.arrived = 0;
    b.gen = 0;
    // Dynamic shared memory: garbage inside, canaries around (the one
    // after it up to the next 16 bytes and 64 more).
    size_t tail = kSmemCanary + (16 - L->shared % 16) % 16;
    char* front = w->smem + kSmemCanary;
    char* data = front + kSmemCanary;
    if (L->shared > 0) {
        for (size_t i = 0; i < kSmemCanary; i++) front[i] = canary_byte(i);
        memset(data, kGarbage, L->shared);
        for (size_t i = 0; i < tail; i++) data[L->shared + i] = canary_byte(i);
    }
    b.dynsmem = L->shared > 0 ? data : nullptr;
    w->block_id = bid;
    w->nthreads = n;
    w->exited = nullptr;
    memset(w->state, T_NEW, n);

    bool failed = false;
    for (;;) {
        bool progressed = false;
        for (unsigned k = 0; k < nwarps && !failed; k++) {
            // Warps run in order, or last first (MINITRON_EMU_WARP_ORDER):
            // a missing barrier shows when the warp that reads shared data
            // runs after the one that overwrites it.
            unsigned wi = g_config.reverse_warps ? nwarps - 1 - k : k;
            unsigned lo = 32 * wi, hi = lo + 32 < n ? lo + 32 : n;
            for (;;) {
                bool ran = false;
                for (unsigned i = lo; i < hi; i++) {
                    if (!runnable(w, i)) continue;
                    EmuThread* t = w->state[i] == T_NEW ? start(w, i) : w->th[i];
                    w->state[i] = T_READY;
                    SWITCH(&w->sched_sp, t->sp);
                    // Back from whichever thread exited or found none to
                    // switch to.
                    if (EmuThread* x = w->exited) {
                        w->free_regions.push_back((char*)x->region);
                        w->exited = nullptr;
                    }
                    ran = true;
                    if (L->error.load(std::memory_order_relaxed)) {
                        failed = true;
                        break;
                    }
                }
                if (!ran || failed) break;
                progressed = true;
            }
        }
        if (failed || b.live == 0) break;
        if (!progressed) {
            int atBlock = 0, atWarp = 0;
            for (unsigned i = 0; i < n; i++) {
                atBlock += w->state[i] == T_WAIT_BLOCK;
                atWarp += w->state[i] == T_WAIT_WARP;
            }
            char msg[200];
            snprintf(msg, sizeof msg,
                     "threads wait at different barriers and can never meet (%d at __syncthreads, %d at a warp-level "
                     "barrier: a shuffle, vote or __syncwarp): a barrier in divergent code",
                     atBlock, atWarp);
            L->fail(CUDA_ERROR_LAUNCH_FAILED, where(L, bid, nullptr) + ": " + msg);
            failed = true;
            break;
        }
    }
    if (failed) { // abandon the threads that did not finish
        for (unsigned i = 0; i < n; i++)
            if (w->state[i] != T_DONE && w->state[i] != T_NEW) {
                w->free_regions.push_back((char*)w->th[i]->region);
                w->th[i] = nullptr;
                w->state[i] = T_DONE;
            }
        return;
    }
    if (L->shared > 0) {
        long bad = 0;
        for (size_t i = 0; i < kSmemCanary && !bad; i++)
            if ((uint8_t)front[i] != canary_byte(i)) bad = (long)i - (long)kSmemCanary;
        for (size_t i = 0; i < tail && !bad; i++)
            if ((uint8_t)data[L->shared + i] != canary_byte(i)) bad = (long)(L->shared + i) + 1;
        if (bad) {
            char msg[200];
            if (bad > 0)
                snprintf(msg, sizeof msg, "wrote past the end of its %u bytes of dynamic shared memory (at byte %ld)",
                         L->shared, bad - 1);
            else
                snprintf(msg, sizeof msg, "wrote before the start of its dynamic shared memory (at byte %ld)", bad);
            L->fail(CUDA_ERROR_ILLEGAL_ADDRESS, where(L, bid, nullptr) + ": " + msg);
        }
    }
}

// ---- the worker pool ------------------------------------------------------

struct Job {
    uint64_t total;
    std::atomic<uint64_t> next{0};
    int active = 0; // workers inside, guarded by Pool::mu
    void (*fn)(void* ctx, uint64_t i, Worker* w);
    void* ctx;
    std::atomic<int>* stop; // optional: nonzero ends the job early
};

struct Pool {
    std::mutex mu;
    std::condition_variable wake, idle;
    std::vector<Job*> jobs;
    int started = 0;
};
static Pool* g_pool;

static void work(Job* j, Worker* w) {
    for (;;) {
        if (j->stop && j->stop->load(std::memory_order_relaxed)) return;
        uint64_t i = j->next.fetch_add(1, std::memory_order_relaxed);
        if (i >= j->total) return;
        j->fn(j->ctx, i, w);
    }
}

// FpEnv holds MXCSR and the x87 control word, which a block's fibers
// share: saved before a block runs, restored after it if a kernel changed
// them.
struct FpEnv {
#if EMU_ASM_SWITCH
    unsigned mxcsr;
    unsigned short cw;
    FpEnv() {
        __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
        __asm__ volatile("fnstcw %0" : "=m"(cw));
    }
    ~FpEnv() {
        unsigned m;
        unsigned short c;
        __asm__ volatile("stmxcsr %0" : "=m"(m));
        __asm__ volatile("fnstcw %0" : "=m"(c));
        if ((m ^ mxcsr) & 0xffc0) __asm__ volatile("ldmxcsr %0" : : "m"(mxcsr));
        if (c != cw) __asm__ volatile("fldcw %0" : : "m"(cw));
    }
#endif
};

static void worker_loop() {
    // Asynchronous signals go to the process's other threads; faults in
    // kernels are handled on an alternate stack (a fiber's may be spent).
    sigset_t all;
    sigfillset(&all);
    for (int s : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT}) sigdelset(&all, s);
    pthread_sigmask(SIG_SETMASK, &all, nullptr);
    stack_t ss;
    ss.ss_size = 256 << 10;
    ss.ss_sp = map_or_die(ss.ss_size, "signal stack");
    ss.ss_flags = 0;
    sigaltstack(&ss, nullptr);
    Worker* w = get_worker();
    Pool* p = g_pool;
    std::unique_lock<std::mutex> lk(p->mu);
    for (;;) {
        Job* j = nullptr;
        for (Job* c : p->jobs)
            if (c->next.load(std::memory_order_relaxed) < c->total) {
                j = c;
                break;
            }
        if (!j) {
            p->wake.wait(lk);
            continue;
        }
        j->active++;
        lk.unlock();
        work(j, w);
        lk.lock();
        if (--j->active == 0) p->idle.notify_all();
    }
}

void sched_init() {
    static std::once_flag once;
    std::call_once(once, [] {
        g_pool = new Pool();
        for (int i = 1; i < g_config.threads; i++) {
            std::thread(worker_loop).detach();
            g_pool->started++;
        }
    });
}

// run_job runs j on the pool and the calling thread.
static void run_job(Job* j) {
    sched_init();
    Pool* p = g_pool;
    bool posted = j->total > 1 && p->started > 0;
    if (posted) {
        {
            std::lock_guard<std::mutex> g(p->mu);
            p->jobs.push_back(j);
        }
        p->wake.notify_all();
    }
    Worker* w = get_worker();
    work(j, w);
    if (posted) {
        std::unique_lock<std::mutex> lk(p->mu);
        for (size_t i = 0; i < p->jobs.size(); i++)
            if (p->jobs[i] == j) {
                p->jobs.erase(p->jobs.begin() + i);
                break;
            }
        p->idle.wait(lk, [j] { return j->active == 0; });
    }
}

// launch_block runs the i-th block to start: block i, or with
// MINITRON_EMU_BLOCK_ORDER=reverse the i-th from the end (CUDA promises
// no order; kernels must not wait for a block that may not have started).
static void launch_block(void* ctx, uint64_t i, Worker* w) {
    Launch* L = (Launch*)ctx;
    if (g_config.reverse_blocks) i = (uint64_t)L->grid.x * L->grid.y * L->grid.z - 1 - i;
    Launch* prev = w->launch;
    const char* prevOp = tls_op;
    w->launch = L;
    tls_op = L->name;
    {
        FpEnv env;
        (void)env;
        run_block(w, L, i);
    }
    w->launch = prev;
    tls_op = prevOp;
}

int run_launch(Launch* L) {
    Job j;
    j.total = (uint64_t)L->grid.x * L->grid.y * L->grid.z;
    j.fn = launch_block;
    j.ctx = L;
    j.stop = &L->error;
    run_job(&j);
    int err = L->error.load();
    if (err) emu_log("%s", L->message.c_str());
    return err;
}

struct ForCtx {
    void (*fn)(void*, uint64_t);
    void* ctx;
};

static void for_item(void* ctx, uint64_t i, Worker*) {
    ForCtx* c = (ForCtx*)ctx;
    c->fn(c->ctx, i);
}

void parallel_for(uint64_t n, void (*fn)(void*, uint64_t), void* ctx) {
    ForCtx c{fn, ctx};
    Job j;
    j.total = n;
    j.fn = for_item;
    j.ctx = &c;
    j.stop = nullptr;
    run_job(&j);
}

bool fault_context(uintptr_t addr, char* buf, size_t n, bool* stack_overflow) {
    *stack_overflow = false;
    Worker* w = tls_worker;
    if (w && w->launch) {
        Launch* L = w->launch;
        for (auto& c : w->chunks) {
            uintptr_t s = (uintptr_t)c.first, e = s + c.second;
            if (addr >= s && addr < e && (addr - s) % g_config.stack < kGuard) *stack_overflow = true;
        }
        describe(buf, n, L, w->block_id, nullptr);
        return true;
    }
    if (tls_op) {
        snprintf(buf, n, "%s", tls_op);
        return true;
    }
    return false;
}
