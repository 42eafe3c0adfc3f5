// Definitions shared by every kernel. Compiled by NVRTC with no headers:
// bfloat16 is handled as raw bits.
//
// Every kernel declares __launch_bounds__(N), N the largest block the
// host launches it with (backend/cuda checks each launch against it): the
// compiler then keeps N threads' registers within a multiprocessor's 64K
// (at most 64 each for 1024 threads, 255 for 256), where without the
// bound a newer compiler could take more and the launch would fail with
// CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES.
//
// A float tensor argument is a device address whose lowest bit says how
// its elements are stored: clear for float32, set for bfloat16 (element
// addresses are always even, so the bit is free). ld and st hide the
// difference; arithmetic is float32 throughout.

typedef unsigned short bf16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define NEG_INF __int_as_float(0xff800000)

// UNROLL unrolls a loop with a constant trip count on the GPU (fragments
// and small arrays stay in registers only when every index is a constant).
// Host code for the CPU stand-ins keeps the loops, which compiles several
// times faster.
#ifdef MINITRON_EMU
#define UNROLL _Pragma("clang loop unroll(disable)")
#else
#define UNROLL _Pragma("unroll")
#endif

__device__ __forceinline__ float bf2f(bf16 x) { return __uint_as_float(((u32)x) << 16); }

// f2bf rounds to nearest, ties to even; NaN stays NaN.
__device__ __forceinline__ bf16 f2bf(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

// f2bf_sr rounds stochastically: up in magnitude with probability equal to
// the fraction dropped, so repeated small updates are unbiased.
__device__ __forceinline__ bf16 f2bf_sr(float f, u32 rnd) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7f800000u) == 0x7f800000u) return f2bf(f);
    u += rnd & 0xffffu;
    return (bf16)(u >> 16);
}

__device__ __forceinline__ bool is_bf(const void* p) { return ((u64)p) & 1; }

__device__ __forceinline__ float ld(const void* p, i64 i) {
    u64 a = (u64)p;
    if (a & 1) return bf2f(((const bf16*)(a - 1))[i]);
    return ((const float*)a)[i];
}

__device__ __forceinline__ void st(void* p, i64 i, float v) {
    u64 a = (u64)p;
    if (a & 1) ((bf16*)(a - 1))[i] = f2bf(v);
    else ((float*)a)[i] = v;
}

// st_sr stores with stochastic rounding when the tensor is bfloat16.
__device__ __forceinline__ void st_sr(void* p, i64 i, float v, u32 rnd) {
    u64 a = (u64)p;
    if (a & 1) ((bf16*)(a - 1))[i] = f2bf_sr(v, rnd);
    else ((float*)a)[i] = v;
}

// hash32 mixes a seed and an index into 32 random bits (a murmur3 finalizer).
__device__ __forceinline__ u32 hash32(u32 seed, u64 i) {
    u32 h = seed ^ (u32)i ^ ((u32)(i >> 32) * 0x85ebca6bu);
    h ^= h >> 16; h *= 0x85ebca6bu;
    h ^= h >> 13; h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

// report records the first failed check of a launch (an index out of
// range); the host reads it at the next synchronization.
__device__ __forceinline__ void report(int* err, int code) { atomicCAS(err, 0, code); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// block_sum returns the sum of v over the block to every thread. blockDim.x
// is a multiple of 32. Safe to call repeatedly.
__device__ float block_sum(float v) {
    __shared__ float sh[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? sh[lane] : 0.f;
    return warp_sum(v);
}

__device__ float block_max(float v) {
    __shared__ float sh[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? sh[lane] : NEG_INF;
    return warp_max(v);
}

// online softmax state: running max m and sum z of exp(x - m).
struct MZ {
    float m, z;
};

// mz_add folds x into the state. A −inf value adds exp(−inf) = 0: it is
// skipped, since an empty state (m = −inf) would otherwise compute
// exp(−inf − (−inf)) = NaN.
__device__ __forceinline__ MZ mz_add(MZ a, float x) {
    if (x == NEG_INF) return a;
    if (x > a.m) {
        a.z = a.z * __expf(a.m - x) + 1.f;
        a.m = x;
    } else {
        a.z += __expf(x - a.m);
    }
    return a;
}

__device__ __forceinline__ MZ mz_merge(MZ a, MZ b) {
    if (b.m == NEG_INF) return a;
    if (a.m == NEG_INF) return b;
    float m = fmaxf(a.m, b.m);
    MZ r;
    r.m = m;
    r.z = a.z * __expf(a.m - m) + b.z * __expf(b.m - m);
    return r;
}

// block_lse returns log(sum(exp(x))) over the values folded into a by each
// thread of the block.
__device__ float block_lse(MZ a) {
    for (int o = 16; o > 0; o >>= 1) {
        MZ b;
        b.m = __shfl_xor_sync(0xffffffffu, a.m, o);
        b.z = __shfl_xor_sync(0xffffffffu, a.z, o);
        a = mz_merge(a, b);
    }
    __shared__ float sm[32], sz[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) { sm[w] = a.m; sz[w] = a.z; }
    __syncthreads();
    MZ r;
    r.m = NEG_INF;
    r.z = 0.f;
    if (lane < (int)(blockDim.x >> 5)) { r.m = sm[lane]; r.z = sz[lane]; }
    for (int o = 16; o > 0; o >>= 1) {
        MZ b;
        b.m = __shfl_xor_sync(0xffffffffu, r.m, o);
        b.z = __shfl_xor_sync(0xffffffffu, r.z, o);
        r = mz_merge(r, b);
    }
    return r.m + logf(r.z);
}

#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// ---- Warp-level tensor-core primitives ----
//
// mma.sync (m16n8k16, bf16 inputs, f32 accumulation), ldmatrix and cp.async
// as inline PTX on the GPU (sm_80 and newer). Fragment layouts are those
// of the PTX ISA (9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with
// floating point type", 9.7.14.5.15 "ldmatrix"): with g = lane/4 and
// t = lane%4, an A fragment (16×16, row-major) holds (g, 2t..2t+1),
// (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..) in its four registers, lower
// column in the lower half; a B fragment (16×8, k×n) holds (k = 2t..2t+1,
// n = g) and (k = 2t+8.., n = g); an accumulator (16×8) holds (g, 2t),
// (g, 2t+1), (g+8, 2t), (g+8, 2t+1).
//
// On the CPU stand-ins (MINITRON_EMU) the same calls go to
// backend/cuda/emu/prelude/10-warp-mma.h, which exchanges the lanes'
// registers and row addresses through warp scratch memory and computes
// each lane's outputs with exactly these layouts.

// u32x4 is 16 bytes: one cp.async transfer, one ldmatrix row.
struct __align__(16) u32x4 {
    u32 x, y, z, w;
};

#ifndef MINITRON_EMU
__device__ __forceinline__ u32 smem_u32(const void* p) { return (u32)__cvta_generic_to_shared(p); }

// mma_bf16_16816 accumulates d += a·b for a 16×16 A and a 16×8 B fragment.
__device__ __forceinline__ void mma_bf16_16816(float d[4], const u32 a[4], const u32 b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// ldmatrix_x4 loads four 8×8 bf16 matrices: lanes 8i..8i+7 give the row
// addresses (16 bytes each, in shared memory) of matrix i, which lands in
// r[i]. The _trans forms deliver each matrix transposed; x2 loads two
// (addresses from lanes 0..15).
__device__ __forceinline__ void ldmatrix_x4(u32 r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32 r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x2(u32 r[2], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(u32 r[2], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_u32(p)));
}

// cp_async_16 starts a 16-byte copy from global to shared memory; the data
// is there once a cp_async_wait covering its group has returned (and a
// barrier, for other threads' copies).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// cp_async_wait waits until at most N of this thread's groups are pending.
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// pack_bf16 rounds two floats to bfloat16 (nearest even) into one register,
// lo in the lower half, as mma operands hold consecutive columns.
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// fast_exp2 is 2^x on the special-function unit (2 ulp; 2^-inf = 0).
__device__ __forceinline__ float fast_exp2(float x) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x));
    return r;
}
#else
__device__ __forceinline__ void mma_bf16_16816(float d[4], const u32 a[4], const u32 b[2]) { emu_mma_bf16_16816(d, a, b); }
__device__ __forceinline__ void ldmatrix_x4(u32 r[4], const void* p) { emu_ldmatrix(r, 4, false, p); }
__device__ __forceinline__ void ldmatrix_x4_trans(u32 r[4], const void* p) { emu_ldmatrix(r, 4, true, p); }
__device__ __forceinline__ void ldmatrix_x2(u32 r[2], const void* p) { emu_ldmatrix(r, 2, false, p); }
__device__ __forceinline__ void ldmatrix_x2_trans(u32 r[2], const void* p) { emu_ldmatrix(r, 2, true, p); }
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) { emu_cp_async_16(smem, gmem); }
__device__ __forceinline__ void cp_async_commit() { emu_cp_async_commit(); }
template <int N> __device__ __forceinline__ void cp_async_wait() { emu_cp_async_wait(N); }
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) { return (u32)f2bf(lo) | ((u32)f2bf(hi) << 16); }
__device__ __forceinline__ float fast_exp2(float x) { return emu_ex2_approx_ftz(x); }
#endif

// ---- 16-byte vector access to tagged tensors ----
//
// Row kernels move 8 consecutive elements at a time when every tensor of
// the row allows it (vec8_ok): one 16-byte load or store for bf16, two for
// float32, instead of 8 element accesses.

// vec8_ok reports whether element i of a tagged tensor starts a 16-byte
// aligned run.
__device__ __forceinline__ bool vec8_ok(const void* p, i64 i) {
    u64 a = (u64)p;
    if (a & 1) return ((a - 1 + 2 * (u64)i) & 15) == 0;
    return ((a + 4 * (u64)i) & 15) == 0;
}

// ldv reads elements i..i+n-1 (n is 1 or 8; 8 needs vec8_ok) into f.
__device__ __forceinline__ void ldv(const void* p, i64 i, float f[8], int n) {
    if (n != 8) {
        f[0] = ld(p, i);
        return;
    }
    u64 a = (u64)p;
    if (a & 1) {
        u32x4 v = *(const u32x4*)((const bf16*)(a - 1) + i);
        u32 w[4] = {v.x, v.y, v.z, v.w};
        UNROLL
        for (int k = 0; k < 4; k++) {
            f[2 * k] = __uint_as_float(w[k] << 16);
            f[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
        }
        return;
    }
    const u32x4* q = (const u32x4*)((const float*)a + i);
    u32x4 v0 = q[0], v1 = q[1];
    f[0] = __uint_as_float(v0.x), f[1] = __uint_as_float(v0.y), f[2] = __uint_as_float(v0.z), f[3] = __uint_as_float(v0.w);
    f[4] = __uint_as_float(v1.x), f[5] = __uint_as_float(v1.y), f[6] = __uint_as_float(v1.z), f[7] = __uint_as_float(v1.w);
}

// stv writes f to elements i..i+n-1 (n is 1 or 8; 8 needs vec8_ok),
// rounding to nearest even for bf16.
__device__ __forceinline__ void stv(void* p, i64 i, const float f[8], int n) {
    if (n != 8) {
        st(p, i, f[0]);
        return;
    }
    u64 a = (u64)p;
    if (a & 1) {
        u32x4 v;
        v.x = (u32)f2bf(f[0]) | ((u32)f2bf(f[1]) << 16);
        v.y = (u32)f2bf(f[2]) | ((u32)f2bf(f[3]) << 16);
        v.z = (u32)f2bf(f[4]) | ((u32)f2bf(f[5]) << 16);
        v.w = (u32)f2bf(f[6]) | ((u32)f2bf(f[7]) << 16);
        *(u32x4*)((bf16*)(a - 1) + i) = v;
        return;
    }
    u32x4* q = (u32x4*)((float*)a + i);
    u32x4 v0, v1;
    v0.x = __float_as_uint(f[0]), v0.y = __float_as_uint(f[1]), v0.z = __float_as_uint(f[2]), v0.w = __float_as_uint(f[3]);
    v1.x = __float_as_uint(f[4]), v1.y = __float_as_uint(f[5]), v1.z = __float_as_uint(f[6]), v1.w = __float_as_uint(f[7]);
    q[0] = v0;
    q[1] = v1;
}
