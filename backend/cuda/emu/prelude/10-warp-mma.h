// Warp-level tensor-core instructions for kernels compiled as host code
// (MINITRON_EMU): mma.sync m16n8k16 with bf16 inputs and f32 accumulators,
// ldmatrix (x2, x4, with and without .trans) and cp.async. kernels/common.cuh
// calls these in place of its inline PTX.
//
// Each lane of a warp runs as its own thread (fiber), holding only its own
// fragment registers, as on the GPU. A collective instruction therefore
// works in two steps: every lane deposits what it holds (its registers or
// its row address) in the warp's scratch memory, the warp meets at a
// barrier, and every lane assembles its own outputs from the deposits
// using the fragment layouts the PTX ISA defines; a second barrier keeps
// the scratch intact until every lane has read it.
//
// Layouts, with g = lane / 4 and t = lane % 4 (PTX ISA 9.7.14.5.8, "Matrix
// Fragments for mma.m16n8k16 with floating point type"):
//   A (16×16, row-major) register i of a lane holds the pair of columns
//     2t, 2t+1 (+8 for i >= 2) of row g (+8 for odd i), lower column in
//     the low 16 bits;
//   B (16×8, k×n) register i holds rows k = 2t, 2t+1 (+8 for i = 1) of
//     column n = g;
//   C/D (16×8, f32) element i is row g (+8 for i >= 2), column 2t + i%2.
// ldmatrix (PTX ISA 9.7.14.5.15): lanes 8j..8j+7 give the addresses of the
// eight 16-byte rows of matrix j (j < number of matrices); lane l receives
// in register j the elements (row l/4, columns 2(l%4), 2(l%4)+1) of matrix
// j, or with .trans the elements (rows 2(l%4), 2(l%4)+1, column l/4).
//
// Only the stand-in driver's contract is used: emu_lane, emu_warp_sync,
// emu_warp_scratch (>= 8 KiB per warp), emu_thread_index and
// emu_block_serial.

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float emu_bf16_at(unsigned reg, int half) {
    unsigned bits = half ? (reg & 0xffff0000u) : (reg << 16);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// emu_ex2_approx_ftz is ex2.approx.ftz.f32: 2^x within 2 ulp, results
// below the smallest normal float flushed to zero.
static inline float emu_ex2_approx_ftz(float x) {
    float r = exp2f(x);
    if (r < 1.17549435e-38f) return 0.f;
    unsigned u;
    memcpy(&u, &r, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 2u) & ~3u;
    memcpy(&r, &u, 4);
    return r;
}

// emu_mma_bf16_16816 computes d += a·b for the warp (each lane passes its
// own fragments and receives its own four accumulator elements).
__attribute__((noinline)) static void emu_mma_bf16_16816(float d[4], const unsigned a[4], const unsigned b[2]) {
    unsigned* s = (unsigned*)emu_warp_scratch(); // [32][6]: a0..a3, b0, b1 of every lane
    unsigned lane = emu_lane();
    for (int i = 0; i < 4; i++) s[lane * 6 + i] = a[i];
    s[lane * 6 + 4] = b[0];
    s[lane * 6 + 5] = b[1];
    emu_warp_sync();
    unsigned g = lane >> 2, t = lane & 3;
    float out[4];
    for (int i = 0; i < 4; i++) {
        unsigned row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
        float acc = d[i];
        for (unsigned kk = 0; kk < 16; kk++) {
            // A(row, kk): lane (row%8)*4 + (kk%8)/2, register row/8 + 2*(kk/8), half kk%2.
            unsigned al = (row & 7) * 4 + ((kk & 7) >> 1), ar = (row >> 3) + 2 * (kk >> 3);
            // B(kk, col): lane col*4 + (kk%8)/2, register kk/8, half kk%2.
            unsigned bl = col * 4 + ((kk & 7) >> 1), br = kk >> 3;
            acc = fmaf(emu_bf16_at(s[al * 6 + ar], kk & 1), emu_bf16_at(s[bl * 6 + 4 + br], kk & 1), acc);
        }
        out[i] = acc;
    }
    emu_warp_sync();
    for (int i = 0; i < 4; i++) d[i] = out[i];
}

// emu_trap_misaligned16 stops the kernel as a GPU does
// (CUDA_ERROR_MISALIGNED_ADDRESS) when p is not a multiple of 16: the
// fault handler reports the trap as a misaligned access, naming the kernel.
static inline void emu_trap_misaligned16(const void* p) {
    if ((uintptr_t)p & 15) __builtin_trap();
}

// emu_ldmatrix loads n (1, 2 or 4) 8×8 matrices of 16-bit elements into r.
// Each row address that is read must be 16-byte aligned, as on a GPU.
__attribute__((noinline)) static void emu_ldmatrix(unsigned* r, int n, bool trans, const void* p) {
    const unsigned char** s = (const unsigned char**)emu_warp_scratch(); // row address of every lane
    unsigned lane = emu_lane();
    if (lane < 8u * n) emu_trap_misaligned16(p);
    s[lane] = (const unsigned char*)p;
    emu_warp_sync();
    unsigned out[4];
    for (int j = 0; j < n; j++) {
        unsigned short e[2];
        for (int h = 0; h < 2; h++) {
            if (trans) memcpy(&e[h], s[8 * j + 2 * (lane & 3) + h] + 2 * (lane >> 2), 2);
            else memcpy(&e[h], s[8 * j + (lane >> 2)] + 4 * (lane & 3) + 2 * h, 2);
        }
        out[j] = (unsigned)e[0] | ((unsigned)e[1] << 16);
    }
    emu_warp_sync();
    for (int j = 0; j < n; j++) r[j] = out[j];
}

// cp.async completes when the PTX ISA says it must (cp.async.wait_group
// N: once at most N of the thread's most recent committed groups are
// pending), not before: each thread queues its
// copies, cp.async.wait_group N performs those of the older groups, and
// until then the destination holds 0xff bytes (NaN in float32 and
// bfloat16). So a kernel that reads a tile before waiting for it, waits
// for too few groups, or never commits the copies computes with NaN here,
// as it would with stale data on a GPU. Copies of groups not yet committed
// are never waited for. Sources are read when the copy is performed
// (a kernel must not write them meanwhile).

enum { EMU_CP_ASYNC_QUEUE = 64 }; // copies in flight per thread; beyond, the oldest completes early (allowed)

struct EmuCpAsync {
    uint64_t serial;  // the block run (EmuBlock::serial) the queue belongs to
    unsigned n;       // queued copies
    unsigned groups;  // groups committed; copies issued now join group `groups`
    struct {
        void* dst;
        const void* src;
        unsigned group;
    } q[EMU_CP_ASYNC_QUEUE];
};

// emu_cp_async_queue returns the calling thread's queue, emptied when it
// still holds another block's copies (one worker thread runs one block at
// a time, so a table per worker thread, indexed by thread, suffices).
static inline EmuCpAsync* emu_cp_async_queue() {
    static thread_local EmuCpAsync* table;
    if (!table) {
        table = (EmuCpAsync*)calloc(1024, sizeof(EmuCpAsync));
        if (!table) abort();
    }
    EmuCpAsync* c = &table[emu_thread_index()];
    if (uint64_t s = emu_block_serial(); c->serial != s) {
        c->serial = s;
        c->n = c->groups = 0;
    }
    return c;
}

// A 16-byte cp.async needs both addresses 16-byte aligned.
static inline void emu_cp_async_16(void* smem, const void* gmem) {
    emu_trap_misaligned16(smem);
    emu_trap_misaligned16(gmem);
    EmuCpAsync* c = emu_cp_async_queue();
    if (c->n == EMU_CP_ASYNC_QUEUE) {
        memcpy(c->q[0].dst, c->q[0].src, 16);
        memmove(&c->q[0], &c->q[1], (c->n - 1) * sizeof c->q[0]);
        c->n--;
    }
    memset(smem, 0xff, 16);
    c->q[c->n].dst = smem;
    c->q[c->n].src = gmem;
    c->q[c->n].group = c->groups;
    c->n++;
}

static inline void emu_cp_async_commit() { emu_cp_async_queue()->groups++; }

// emu_cp_async_wait performs the copies of every committed group but the
// n most recent.
static inline void emu_cp_async_wait(unsigned n) {
    EmuCpAsync* c = emu_cp_async_queue();
    unsigned keep = 0;
    for (unsigned i = 0; i < c->n; i++) {
        if (c->q[i].group + n < c->groups) memcpy(c->q[i].dst, c->q[i].src, 16);
        else c->q[keep++] = c->q[i];
    }
    c->n = keep;
}
