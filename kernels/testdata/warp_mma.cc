// Checks the tensor-core helpers of common.cuh as compiled for the CPU
// stand-ins (MINITRON_EMU), i.e. backend/cuda/emu/prelude/10-warp-mma.h:
// one warp of 32 threads loads known matrices from "shared memory" with
// ldmatrix (all four forms) and multiplies them with mma_bf16_16816; every
// result is compared with the product computed directly here. The values
// are small multiples of 1/2, so bf16 holds them and the sums exactly.
//
// The stand-in driver's warp primitives are provided by 32 POSIX threads
// and a barrier. Built and run by TestWarpMMAEmulation (kernels_test.go):
//   clang++ -std=c++17 -pthread -I../backend/cuda/emu/prelude warp_mma.cc
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) alignas(n)
#define MINITRON_EMU 1

static pthread_barrier_t warp_barrier;
static thread_local unsigned lane_id;
alignas(16) static unsigned char scratch[8192];
unsigned emu_lane() { return lane_id; }
unsigned emu_warp_id() { return 0; }
void emu_warp_sync() { pthread_barrier_wait(&warp_barrier); }
void* emu_warp_scratch() { return scratch; }
unsigned emu_thread_index() { return lane_id; }
unsigned long long emu_block_serial() { return 1; }

// Built-ins common.cuh refers to outside the tensor-core helpers (unused
// here; math.h declares the rest).
struct dim3_ { unsigned x, y, z; };
static dim3_ threadIdx, blockDim;
static float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
template <class T> static T __shfl_xor_sync(unsigned, T v, int) { return v; }
static void __syncthreads() {}
static int atomicCAS(int* p, int, int) { return *p; }
#define __expf expf

#include "10-warp-mma.h"
#include "../../kernels/common.cuh"

static float av(int m, int k) { return (float)(((m * 3 + k * 5) % 7) - 3) * 0.5f; }  // A[m][k], 16×16
static float bv(int k, int n) { return (float)(((k * 2 + n * 3) % 5) - 2); }         // B[k][n], 16×16 (two n-tiles)
static float cv(int m, int n) { return (float)((m + 2 * n) % 3); }                  // initial accumulator

// Shared-memory images: A row-major [m][k] and transposed [k][m]; B
// row-major [k][n] and transposed [n][k]. Rows are 16 values (32 bytes).
alignas(16) static bf16 As[16 * 16], AsT[16 * 16], Bs[16 * 16], BsT[16 * 16];
static float got[4][16][16]; // variant, m, n
static int bad = 0;

static void* lane_main(void* arg) {
    lane_id = (unsigned)(size_t)arg;
    unsigned l = lane_id, g = l / 4, t = l % 4;
    for (int variant = 0; variant < 4; variant++) {
        // variant bit 0: A through ldmatrix_x4_trans of Aᵀ; bit 1: B through
        // ldmatrix_x2 / x4 of Bᵀ (non-transposed) instead of .trans of B.
        u32 a[4];
        if (variant & 1) {
            int q = l / 8; // matrix q: rows (k) 8*(q/2).., columns (m) 8*(q%2)..
            ldmatrix_x4_trans(a, AsT + (8 * (q / 2) + l % 8) * 16 + 8 * (q % 2));
        } else {
            ldmatrix_x4(a, As + (l % 16) * 16 + 8 * (l / 16));
        }
        u32 b[2][2];
        if (variant & 2) {
            // n-tile 0 with x2 (matrices: k 0..7, k 8..15 of rows n 0..7), n-tile 1 with x4's upper half.
            ldmatrix_x2(b[0], BsT + (l % 8) * 16 + 8 * ((l / 8) % 2));
            u32 r4[4];
            ldmatrix_x4(r4, BsT + ((l % 8) + 8 * (l / 16)) * 16 + 8 * ((l / 8) % 2));
            b[1][0] = r4[2];
            b[1][1] = r4[3];
        } else {
            ldmatrix_x2_trans(b[0], Bs + (l % 16) * 16);
            u32 r4[4];
            ldmatrix_x4_trans(r4, Bs + ((l % 8) + 8 * ((l / 8) % 2)) * 16 + 8 * (l / 16));
            b[1][0] = r4[2];
            b[1][1] = r4[3];
        }
        for (int nt = 0; nt < 2; nt++) {
            float d[4];
            for (int i = 0; i < 4; i++) d[i] = cv(g + 8 * (i / 2), nt * 8 + 2 * t + i % 2);
            mma_bf16_16816(d, a, b[nt]);
            for (int i = 0; i < 4; i++) got[variant][g + 8 * (i / 2)][nt * 8 + 2 * t + i % 2] = d[i];
        }
    }
    return 0;
}

int main() {
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            As[i * 16 + j] = f2bf(av(i, j));
            AsT[j * 16 + i] = f2bf(av(i, j));
            Bs[i * 16 + j] = f2bf(bv(i, j));
            BsT[j * 16 + i] = f2bf(bv(i, j));
        }
    // cp.async: a copy lands when cp.async.wait_group says its group must
    // be complete, not before (the destination holds 0xff bytes until
    // then), and the copies of a group not yet committed are never waited
    // for.
    alignas(16) bf16 src[3][8], dst[3][8], poison[8];
    memset(poison, 0xff, 16);
    for (int j = 0; j < 3; j++)
        for (int i = 0; i < 8; i++) src[j][i] = f2bf((float)(8 * j + i)), dst[j][i] = 0;
    // landed: which of the first `issued` copies hold their source (the
    // others poison).
    auto landed = [&](const char* when, int issued, int mask) {
        for (int j = 0; j < issued; j++) {
            const void* want = (mask >> j & 1) ? (const void*)src[j] : (const void*)poison;
            if (memcmp(dst[j], want, 16) != 0) {
                printf("cp.async %s: copy %d %s\n", when, j, (mask >> j & 1) ? "did not land" : "landed too early, or no poison");
                bad++;
            }
        }
    };
    cp_async_16(dst[0], src[0]);
    landed("before any wait", 1, 0);
    cp_async_commit();
    cp_async_16(dst[1], src[1]);
    cp_async_commit();
    cp_async_16(dst[2], src[2]); // not committed yet
    cp_async_wait<1>();
    landed("after wait_group 1 of two groups", 3, 1);
    cp_async_wait<0>();
    landed("after wait_group 0 with an open group", 3, 3);
    cp_async_commit();
    cp_async_wait<0>();
    landed("after committing the last group and wait_group 0", 3, 7);
    // fast_exp2 is ex2.approx.ftz: within 2.5 ulp of 2^x here (2 ulp on
    // the GPU: the stand-ins round exp2f's result to 4-ulp steps), not
    // always correctly rounded, and 0 below the normal range.
    int inexact = 0;
    for (int i = -4000; i <= 4000; i++) {
        float x = i * 0.01f;
        double want = exp2((double)x);
        float got = fast_exp2(x);
        float ulp = nextafterf((float)want, INFINITY) - (float)want;
        if (fabs(got - want) > 2.5 * ulp) {
            printf("fast_exp2(%g) = %.9g, want %.9g within 2.5 ulp\n", x, got, want);
            bad++;
        }
        inexact += got != (float)want;
    }
    if (inexact == 0 || fast_exp2(-127.5f) != 0.f || fast_exp2(-INFINITY) != 0.f) {
        printf("fast_exp2: %d results differ from 2^x rounded; 2^-127.5 = %g, 2^-inf = %g (want some, 0, 0)\n", inexact,
               fast_exp2(-127.5f), fast_exp2(-INFINITY));
        bad++;
    }
    if (pack_bf16(1.0f, -2.0f) != (0x3f80u | (0xc000u << 16))) {
        printf("pack_bf16(1, -2) = %#x\n", pack_bf16(1.0f, -2.0f));
        bad++;
    }
    pthread_barrier_init(&warp_barrier, 0, 32);
    pthread_t th[32];
    for (size_t i = 0; i < 32; i++) pthread_create(&th[i], 0, lane_main, (void*)i);
    for (int i = 0; i < 32; i++) pthread_join(th[i], 0);
    for (int variant = 0; variant < 4; variant++)
        for (int m = 0; m < 16; m++)
            for (int n = 0; n < 16; n++) {
                double want = cv(m, n);
                for (int k = 0; k < 16; k++) want += (double)av(m, k) * bv(k, n);
                if (got[variant][m][n] != (float)want) {
                    if (bad < 10) printf("variant %d: D[%d][%d] = %g, want %g\n", variant, m, n, got[variant][m][n], want);
                    bad++;
                }
            }
    if (bad) {
        printf("%d wrong\n", bad);
        return 1;
    }
    printf("ok: 4 load variants × 16×16 outputs exact\n");
    return 0;
}
