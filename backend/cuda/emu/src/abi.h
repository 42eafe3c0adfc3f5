// The interface between the stand-in driver (libcuda.so.1) and the kernel
// modules the stand-in NVRTC compiles. Both sides include this header: the
// driver directly, modules through the prelude. Change EMU_ABI_VERSION with
// any change of layout, so a module compiled against another layout is
// refused (CUDA_ERROR_INVALID_IMAGE) instead of misread.
#ifndef MINITRON_EMU_ABI_H
#define MINITRON_EMU_ABI_H

#include <stddef.h>
#include <stdint.h>

#define EMU_ABI_VERSION 4

// Every fiber (one CUDA thread) runs on a stack region of 2^stack_shift
// bytes aligned to its size; its EmuThread sits near the top, so code on
// the fiber finds it from the stack pointer alone (emu_thread_of). Regions
// are colored by their address: the EmuThread of region color c sits c
// cache lines lower, so the threads of neighbouring regions do not all
// fall in one cache set.
#define EMU_THREAD_SLOT 256
#define EMU_COLORS 16

#define EMU_WARP_SCRATCH 8192 // bytes per warp, emu_warp_scratch()
#define EMU_MAX_WARPS 32      // 1024 threads per block

struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

// EmuWarp is one warp of the running block.
struct EmuWarp {
    uint64_t slot[2][32]; // shuffle and vote values, double buffered: lane writes, barrier, lanes read
    void* scratch;        // EMU_WARP_SCRATCH bytes, 16-byte aligned, private to the warp
    uint32_t live_mask;   // lanes that have not returned
    // scheduler state (driver only)
    int live, arrived;
    unsigned gen;
};

// EmuBlock is the block a worker thread is running.
struct EmuBlock {
    uint3 blockIdx;
    dim3 blockDim, gridDim;
    void* dynsmem; // dynamic shared memory (extern __shared__)
    EmuWarp* warps;
    uint64_t serial; // differs for every block a worker thread runs (never 0), for per-thread state kept across blocks
    // scheduler state (driver only)
    int live, arrived;
    unsigned gen;
};

// EmuThread is one CUDA thread, at the top of its fiber's stack region.
struct EmuThread {
    uint3 threadIdx;
    unsigned lane, warp; // lane within the warp, warp within the block
    unsigned phase;      // warp-collective operations done: buffer phase&1 of EmuWarp::slot is next
    unsigned index;      // linear thread index within the block
    unsigned wmask;      // the mask of the warp-level operation the thread is at
    EmuBlock* block;
    // driver only
    void* sp;     // saved stack pointer while switched out
    void* worker; // the OS thread running the block
    void* region; // the stack region
};

// emu_thread_of returns the thread whose stack holds sp.
static inline EmuThread* emu_thread_of(uintptr_t sp, unsigned shift) {
    uintptr_t top = (sp | (((uintptr_t)1 << shift) - 1)) + 1;
    unsigned color = (unsigned)(sp >> shift) & (EMU_COLORS - 1);
    return (EmuThread*)(top - EMU_THREAD_SLOT - 64 * color);
}

// EmuRuntime is what the driver hands a module when it loads it.
struct EmuRuntime {
    int abi;                   // EMU_ABI_VERSION
    unsigned stack_shift;      // log2 of the stack region size
    void (*sync_block)(EmuThread*);  // __syncthreads
    void (*sync_warp)(EmuThread*);   // barrier over the live lanes of the warp (set wmask first)
    // fail ends the launch with a CUDA error code (710 assert, 719 trap) and
    // a message; it does not return.
    void (*fail)(EmuThread*, int code, const char* msg);
};

// A module exports, besides one entry per kernel:
//   extern "C" int __emu_module_init(const EmuRuntime*);  // returns EMU_ABI_VERSION
//   extern "C" void __emu_kernel_NAME(void** params);    // runs kernel NAME as the calling fiber
//   extern "C" const char* __emu_sig_NAME(void);         // parameter kinds: p pointer, 4 or 8 (bytes)

// EMU_IMAGE_MAGIC starts every image the stand-in NVRTC returns: the magic,
// then the little-endian 64-bit length of the shared object that follows.
#define EMU_IMAGE_MAGIC "minitron-emu-image-v1"
#define EMU_IMAGE_MAGIC_LEN 21
#define EMU_IMAGE_HEADER 32

#endif
