// Definitions shared by every kernel. Compiled by NVRTC with no headers:
// bfloat16 is handled as raw bits.
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
