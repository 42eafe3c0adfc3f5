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
// Only the stand-in driver's contract is used: emu_lane, emu_warp_sync and
// emu_warp_scratch (>= 8 KiB per warp).

#include <string.h>
#include <math.h>

static inline float emu_bf16_at(unsigned reg, int half) {
    unsigned bits = half ? (reg & 0xffff0000u) : (reg << 16);
    float f;
    memcpy(&f, &bits, 4);
    return f;
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

// emu_ldmatrix loads n (1, 2 or 4) 8×8 matrices of 16-bit elements into r.
__attribute__((noinline)) static void emu_ldmatrix(unsigned* r, int n, bool trans, const void* p) {
    const unsigned char** s = (const unsigned char**)emu_warp_scratch(); // row address of every lane
    unsigned lane = emu_lane();
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

// emu_cp_async_16 copies at once: a kernel may only read the destination
// after cp.async.wait_group and a barrier, by which time it is there.
static inline void emu_cp_async_16(void* smem, const void* gmem) { memcpy(smem, gmem, 16); }
