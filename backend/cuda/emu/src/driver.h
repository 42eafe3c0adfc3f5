// Internal declarations of the stand-in driver (libcuda.so.1), shared by
// driver.cc (the API), sched.cc (fibers, worker threads, launches) and
// mem.cc (allocations, guards, the fault handler).
#ifndef MINITRON_EMU_DRIVER_H
#define MINITRON_EMU_DRIVER_H

#include <atomic>
#include <mutex>
#include <string>

#include "abi.h"

// CUresult codes used.
enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_DEINITIALIZED = 4,
    CUDA_ERROR_NO_DEVICE = 100,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_NOT_READY = 600,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
    CUDA_ERROR_ASSERT = 710,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_SUPPORTED = 801,
    CUDA_ERROR_UNKNOWN = 999,
};

// Config is read from the environment by cuInit.
struct Config {
    int gpus = 1;                  // MINITRON_EMU_GPUS
    uint64_t memory = 0;           // MINITRON_EMU_MEMORY, bytes per device
    int threads = 1;               // MINITRON_EMU_THREADS, the calling thread included
    size_t stack = 64 << 10;       // MINITRON_EMU_STACK, a power of two
    int sms = 1;                   // multiprocessors reported (CPU cores)
    bool reverse_blocks = false;   // MINITRON_EMU_BLOCK_ORDER=reverse: blocks start last index first
    bool reverse_warps = false;    // MINITRON_EMU_WARP_ORDER=reverse: between barriers, later warps run first
};
extern Config g_config;

// emu_log prints one line to stderr, prefixed "minitron emu: ".
void emu_log(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// ---- launches (sched.cc) --------------------------------------------------

struct Launch {
    const char* name;         // kernel name
    void (*entry)(void**);    // the module's trampoline
    void** params;
    dim3 grid, block;
    unsigned shared;          // dynamic shared memory bytes
    std::atomic<int> error{0};
    std::mutex mu;
    std::string message;      // why error was set
    void fail(int code, const std::string& msg);
};

// sched_init starts the scheduler with g_config (once).
void sched_init();
// run_launch runs every block of L and returns its status.
int run_launch(Launch* L);
// sched_runtime fills the table a module's __emu_module_init receives.
void sched_runtime(EmuRuntime* rt);
// parallel_for runs fn(ctx, i) for i in [0, n) over the worker threads.
void parallel_for(uint64_t n, void (*fn)(void*, uint64_t), void* ctx);
// fault_context describes what the faulting thread was doing (a kernel and
// its block, a library call) into buf, and whether addr is the guard page
// of one of its fiber stacks; returns false when the thread was running
// none of the stand-ins' code.
bool fault_context(uintptr_t addr, char* buf, size_t n, bool* stack_overflow);
// set_current_op names the library call running on this thread.
const char* set_current_op(const char* op);

// ---- memory (mem.cc) ------------------------------------------------------

// mem_alloc allocates device memory of device dev, guarded; 0 on failure.
int mem_alloc(int dev, size_t bytes, uint64_t limit, uintptr_t* out);
int mem_free(uintptr_t p, int* dev);
int mem_alloc_host(size_t bytes, void** out);
int mem_free_host(void* p);
// mem_used returns the bytes allocated on dev.
uint64_t mem_used(int dev);
// mem_range reports whether [p, p+n) lies in one live allocation.
bool mem_range(uintptr_t p, size_t n);
// mem_check checks the canaries of the allocation holding p (every
// allocation of dev when p is 0; dev < 0 means every device); on damage
// it prints what and where, naming after ("kernel X"), and returns false.
bool mem_check(uintptr_t p, int dev, const char* after);
// mem_describe names the allocation around addr for a fault message.
void mem_describe(uintptr_t addr, char* buf, size_t n);
// mem_drop frees every allocation of dev (a context reset).
void mem_drop(int dev);
// fault_init installs the SIGSEGV/SIGBUS handler (once).
void fault_init();

#endif
