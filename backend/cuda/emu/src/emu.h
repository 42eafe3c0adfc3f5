// What the stand-in driver (libcuda.so.1) offers the other stand-ins
// (cuBLAS, and later cuBLASLt and NCCL), which link against it. Not part of
// any CUDA API; the names start with emu_ so they cannot clash with one.
#ifndef MINITRON_EMU_H
#define MINITRON_EMU_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define EMU_EXPORT_API extern "C" __attribute__((visibility("default")))

// emu_parallel_for runs fn(ctx, i) for every i in [0, n) on the worker
// threads and the calling thread, and returns when all have finished.
EMU_EXPORT_API void emu_parallel_for(uint64_t n, void (*fn)(void* ctx, uint64_t i), void* ctx);

// emu_check_range reports whether [p, p+bytes) lies inside one live
// device (or page-locked host) allocation. If not, it prints a line to
// stderr naming op and what ("matrix A") and returns 0.
EMU_EXPORT_API int emu_check_range(const void* p, size_t bytes, const char* op, const char* what);

// emu_context_error returns the sticky error of the calling thread's
// current context (0 when there is none), or CUDA_ERROR_INVALID_CONTEXT
// (201) when no context is current.
EMU_EXPORT_API int emu_context_error(void);

// emu_set_context_error makes code the sticky error of the calling thread's
// current context (a failed library call that a real GPU would turn into
// a failed kernel).
EMU_EXPORT_API void emu_set_context_error(int code);

// emu_current_op names the library call running on this thread, for the
// fault handler's message ("cublasGemmEx"); NULL when none. Returns the
// previous value.
EMU_EXPORT_API const char* emu_current_op(const char* op);

// bfloat16 conversions for the stand-ins' element loops (header-only).
inline float bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

inline uint16_t f32_to_bf16(float f) { // round to nearest even; NaN stays NaN
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#endif
