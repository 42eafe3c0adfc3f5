// The stand-in cuBLAS (libcublas.so): handles, and GEMM (cublasGemmEx,
// cublasGemmStridedBatchedEx, cublasSgemm_v2) in float32 with cuBLAS's
// column-major layout, transposes, leading dimensions, data types
// (CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF) and argument checks. Products are
// blocked (packed panels, a register-blocked micro-kernel) and spread over
// the stand-in driver's worker threads; each element's sum runs over k in
// one fixed order, so results do not depend on the thread count.
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "emu.h"

#define API extern "C" __attribute__((visibility("default")))

typedef int cublasStatus_t;
enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_MAPPING_ERROR = 11,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum { OP_N = 0, OP_T = 1, OP_C = 2 };
enum { R_32F = 0, R_16F = 2, R_16BF = 14 };

namespace {

const uint32_t kHandleMagic = 0x424c4153;

struct Handle {
    uint32_t magic = kHandleMagic;
    void* stream = nullptr;
    int math_mode = 0;
    int pointer_mode = 0;
    void* workspace = nullptr;
    size_t workspace_bytes = 0;
};

bool valid(Handle* h) { return h && h->magic == kHandleMagic; }

__attribute__((format(printf, 1, 2))) void say(const char* fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "minitron emu: %s\n", buf);
}

// ---- element conversions ----------------------------------------------------

inline float f16_to_f32(uint16_t h) {
    uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
    if (e == 0x1f) {
        u = s | 0x7f800000u | (m << 13);
    } else if (e == 0) {
        if (m == 0) {
            u = s;
        } else { // subnormal: normalize
            e = 127 - 15 + 1;
            while (!(m & 0x400)) {
                m <<= 1;
                e--;
            }
            u = s | (e << 23) | ((m & 0x3ff) << 13);
        }
    } else {
        u = s | ((e + 127 - 15) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

inline uint16_t f32_to_f16(float f) { // round to nearest even
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t s = (u >> 16) & 0x8000, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(s | 0x7e00);
    if (a >= 0x477ff000u) return (uint16_t)(s | 0x7c00); // overflow to infinity
    if (a < 0x38800000u) {                              // subnormal or zero
        if (a < 0x33000000u) return (uint16_t)s;
        uint32_t e = a >> 23, m = (a & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; // 14..24
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(s | r);
    }
    uint32_t r = a - 0x38000000u; // rebias exponent
    uint32_t q = r >> 13, rem = r & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (q & 1))) q++;
    return (uint16_t)(s | q);
}

inline float load(const void* p, int type, int64_t i) {
    switch (type) {
    case R_16BF: return bf16_to_f32(((const uint16_t*)p)[i]);
    case R_16F: return f16_to_f32(((const uint16_t*)p)[i]);
    default: return ((const float*)p)[i];
    }
}

inline void store(void* p, int type, int64_t i, float v) {
    switch (type) {
    case R_16BF: ((uint16_t*)p)[i] = f32_to_bf16(v); break;
    case R_16F: ((uint16_t*)p)[i] = f32_to_f16(v); break;
    default: ((float*)p)[i] = v;
    }
}

int elem_size(int type) { return type == R_32F ? 4 : 2; }

// ---- the blocked product ----------------------------------------------------

const int MR = 16, NR = 6;           // micro-tile of C in registers
const int MC = 96, NC = 96, KC = 256; // block of C per task, depth per pass

typedef float v8 __attribute__((vector_size(32)));

// kernel computes acc (MR x NR, column-major) = sum over l < kc of
// a[l*MR + r] * b[l*NR + c], then adds it into c (leading dimension ldc).
static inline __attribute__((always_inline)) void micro(int kc, const float* a, const float* b, float* c, int ldc) {
    v8 acc[NR][2];
    for (int j = 0; j < NR; j++) acc[j][0] = acc[j][1] = (v8){0, 0, 0, 0, 0, 0, 0, 0};
    for (int l = 0; l < kc; l++) {
        v8 a0, a1;
        memcpy(&a0, a + l * MR, 32);
        memcpy(&a1, a + l * MR + 8, 32);
        for (int j = 0; j < NR; j++) {
            float bv = b[l * NR + j];
            v8 bb = {bv, bv, bv, bv, bv, bv, bv, bv};
            acc[j][0] += a0 * bb;
            acc[j][1] += a1 * bb;
        }
    }
    for (int j = 0; j < NR; j++) {
        float* cj = c + (size_t)j * ldc;
        for (int r = 0; r < 8; r++) {
            cj[r] += acc[j][0][r];
            cj[8 + r] += acc[j][1][r];
        }
    }
}

__attribute__((target("avx2,fma"))) void micro_avx2(int kc, const float* a, const float* b, float* c, int ldc) {
    micro(kc, a, b, c, ldc);
}
void micro_generic(int kc, const float* a, const float* b, float* c, int ldc) { micro(kc, a, b, c, ldc); }

struct Operand {
    const char* p;
    int type;
    int64_t ld, stride;
    bool trans;
};

struct Gemm {
    int m, n, k;
    float alpha, beta;
    Operand a, b;
    char* c;
    int ctype;
    int64_t ldc, cstride;
    int batch;
    int tiles_m, tiles_n;
    bool avx2;
};

struct LoadF32 {
    static float get(const char* p, int64_t i) { return ((const float*)p)[i]; }
};
struct LoadBF16 {
    static float get(const char* p, int64_t i) { return bf16_to_f32(((const uint16_t*)p)[i]); }
};
struct LoadF16 {
    static float get(const char* p, int64_t i) { return f16_to_f32(((const uint16_t*)p)[i]); }
};

// pack copies rows [r0, r0+rc) by depth [l0, l0+kc) of a matrix whose
// element (r, l) is p[l + r*ld] (depthMajor) or p[r + l*ld], into panels of
// W rows: P[(panel*KC + l)*W + w] = element(r0 + panel*W + w, l0 + l),
// zero past rc. op(A) is rows i, depth l; op(B) is rows j, depth l.
template <typename L, int W>
void pack(const char* p, int64_t ld, bool depthMajor, int r0, int rc, int l0, int kc, float* P) {
    int panels = (rc + W - 1) / W;
    for (int pn = 0; pn < panels; pn++) {
        float* out = P + (size_t)pn * KC * W;
        int rows = rc - pn * W < W ? rc - pn * W : W;
        if (rows < W)
            for (int l = 0; l < kc; l++)
                for (int w = rows; w < W; w++) out[l * W + w] = 0.f;
        if (depthMajor) {
            for (int w = 0; w < rows; w++) {
                const char* row = p; // element (r, l) at index l + r*ld
                int64_t base = (int64_t)(r0 + pn * W + w) * ld + l0;
                for (int l = 0; l < kc; l++) out[l * W + w] = L::get(row, base + l);
            }
        } else {
            for (int l = 0; l < kc; l++) {
                int64_t base = (int64_t)(l0 + l) * ld + r0 + pn * W;
                for (int w = 0; w < rows; w++) out[l * W + w] = L::get(p, base + w);
            }
        }
    }
}

template <int W>
void pack_any(const Operand& o, int q, bool depthMajor, int r0, int rc, int l0, int kc, float* P) {
    const char* p = o.p + (int64_t)q * o.stride * elem_size(o.type);
    switch (o.type) {
    case R_16BF: pack<LoadBF16, W>(p, o.ld, depthMajor, r0, rc, l0, kc, P); break;
    case R_16F: pack<LoadF16, W>(p, o.ld, depthMajor, r0, rc, l0, kc, P); break;
    default: pack<LoadF32, W>(p, o.ld, depthMajor, r0, rc, l0, kc, P);
    }
}

void tile(void* ctx, uint64_t t) {
    const Gemm& g = *(const Gemm*)ctx;
    thread_local std::vector<float> Ap, Bp, Ct;
    Ap.resize((size_t)MC * KC);
    Bp.resize((size_t)KC * NC);
    Ct.resize((size_t)MC * NC);
    int q = (int)(t / ((uint64_t)g.tiles_m * g.tiles_n));
    uint64_t rest = t % ((uint64_t)g.tiles_m * g.tiles_n);
    int i0 = (int)(rest % g.tiles_m) * MC, j0 = (int)(rest / g.tiles_m) * NC;
    int mc = g.m - i0 < MC ? g.m - i0 : MC, nc = g.n - j0 < NC ? g.n - j0 : NC;
    int mp = (mc + MR - 1) / MR, np = (nc + NR - 1) / NR; // micro-panels
    std::fill(Ct.begin(), Ct.end(), 0.f);
    for (int l0 = 0; l0 < g.k; l0 += KC) {
        int kc = g.k - l0 < KC ? g.k - l0 : KC;
        pack_any<MR>(g.a, q, g.a.trans, i0, mc, l0, kc, Ap.data());  // op(A)(i, l): A[l + i*lda] when transposed
        pack_any<NR>(g.b, q, !g.b.trans, j0, nc, l0, kc, Bp.data()); // op(B)(l, j): B[l + j*ldb] unless transposed
        for (int pj = 0; pj < np; pj++)
            for (int pi = 0; pi < mp; pi++) {
                const float* a = &Ap[(size_t)pi * KC * MR];
                const float* b = &Bp[(size_t)pj * KC * NR];
                float* c = &Ct[(size_t)pj * NR * MC + pi * MR];
                if (g.avx2)
                    micro_avx2(kc, a, b, c, MC);
                else
                    micro_generic(kc, a, b, c, MC);
            }
    }
    char* C = g.c + (int64_t)q * g.cstride * elem_size(g.ctype);
    for (int j = 0; j < nc; j++)
        for (int i = 0; i < mc; i++) {
            int64_t idx = (int64_t)(i0 + i) + (int64_t)(j0 + j) * g.ldc;
            float v = g.alpha * Ct[(size_t)j * MC + i];
            if (g.beta != 0.f) v += g.beta * load(C, g.ctype, idx); // beta = 0: C is not read
            store(C, g.ctype, idx, v);
        }
}

// scale_c sets C = beta*C (for k = 0 or alpha = 0), without reading C when
// beta is 0.
void scale_c(const Gemm& g) {
    for (int q = 0; q < g.batch; q++) {
        char* C = g.c + (int64_t)q * g.cstride * elem_size(g.ctype);
        for (int j = 0; j < g.n; j++)
            for (int i = 0; i < g.m; i++) {
                int64_t idx = i + (int64_t)j * g.ldc;
                store(C, g.ctype, idx, g.beta == 0.f ? 0.f : g.beta * load(C, g.ctype, idx));
            }
    }
}

const char* type_name(int t) {
    switch (t) {
    case R_32F: return "CUDA_R_32F";
    case R_16F: return "CUDA_R_16F";
    case R_16BF: return "CUDA_R_16BF";
    }
    return "an unsupported type";
}

cublasStatus_t gemm(const char* call, Handle* h, int ta, int tb, int m, int n, int k, const void* alpha, const void* A,
                    int atype, int64_t lda, int64_t strideA, const void* B, int btype, int64_t ldb, int64_t strideB,
                    const void* beta, void* C, int ctype, int64_t ldc, int64_t strideC, int batch, int compute) {
    if (!valid(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (m < 0 || n < 0 || k < 0 || batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    if ((ta != OP_N && ta != OP_T && ta != OP_C) || (tb != OP_N && tb != OP_T && tb != OP_C))
        return CUBLAS_STATUS_INVALID_VALUE;
    int64_t arows = ta == OP_N ? m : k, brows = tb == OP_N ? k : n;
    if (lda < (arows > 1 ? arows : 1) || ldb < (brows > 1 ? brows : 1) || ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
    // CUBLAS_COMPUTE_32F and its _PEDANTIC and _FAST_* variants.
    if (compute != 68 && compute != 69 && compute != 74 && compute != 75 && compute != 77) {
        say("%s: compute type %d is not supported by the stand-in cuBLAS (use CUBLAS_COMPUTE_32F)", call, compute);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    bool typesOK = atype == btype && (atype == R_32F || atype == R_16F || atype == R_16BF) && (ctype == R_32F || ctype == atype);
    if (!typesOK) {
        say("%s: A of %s, B of %s and C of %s: not a combination cuBLAS supports with CUBLAS_COMPUTE_32F", call,
            type_name(atype), type_name(btype), type_name(ctype));
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (emu_context_error() != 0) return CUBLAS_STATUS_EXECUTION_FAILED;
    if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
    Gemm g;
    g.m = m;
    g.n = n;
    g.k = k;
    memcpy(&g.alpha, alpha, 4);
    memcpy(&g.beta, beta, 4);
    g.a = {(const char*)A, atype, lda, strideA, ta != OP_N};
    g.b = {(const char*)B, btype, ldb, strideB, tb != OP_N};
    g.c = (char*)C;
    g.ctype = ctype;
    g.ldc = ldc;
    g.cstride = strideC;
    g.batch = batch;
    g.tiles_m = (m + MC - 1) / MC;
    g.tiles_n = (n + NC - 1) / NC;
    g.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    // What a kernel would read and write must lie in device allocations.
    bool reads = k > 0 && g.alpha != 0.f;
    for (int q = 0; q < batch; q++) {
        int64_t acols = ta == OP_N ? k : m, bcols = tb == OP_N ? n : k;
        bool ok = emu_check_range((const char*)C + q * strideC * elem_size(ctype), (size_t)(((int64_t)n - 1) * ldc + m) * elem_size(ctype), call, "matrix C");
        if (reads) {
            ok = ok && emu_check_range((const char*)A + q * strideA * elem_size(atype), (size_t)((acols - 1) * lda + arows) * elem_size(atype), call, "matrix A");
            ok = ok && emu_check_range((const char*)B + q * strideB * elem_size(btype), (size_t)((bcols - 1) * ldb + brows) * elem_size(btype), call, "matrix B");
        }
        if (!ok) {
            emu_set_context_error(700); // CUDA_ERROR_ILLEGAL_ADDRESS, as the real kernel's fault would
            return CUBLAS_STATUS_EXECUTION_FAILED;
        }
    }
    const char* prev = emu_current_op(call);
    if (!reads)
        scale_c(g);
    else
        emu_parallel_for((uint64_t)batch * g.tiles_m * g.tiles_n, tile, &g);
    emu_current_op(prev);
    return CUBLAS_STATUS_SUCCESS;
}

} // namespace

API cublasStatus_t cublasCreate_v2(Handle** h) {
    if (!h) return CUBLAS_STATUS_INVALID_VALUE;
    int e = emu_context_error();
    if (e == 3) return CUBLAS_STATUS_NOT_INITIALIZED; // cuInit not called
    *h = new Handle();
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasDestroy_v2(Handle* h) {
    if (!valid(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->magic = 0;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasSetStream_v2(Handle* h, void* s) {
    if (!valid(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasGetStream_v2(Handle* h, void** s) {
    if (!valid(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!s) return CUBLAS_STATUS_INVALID_VALUE;
    *s = h->stream;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasSetMathMode(Handle* h, int mode) {
    if (!valid(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->math_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasGetMathMode(Handle* h, int* mode) {
    if (!valid(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
    *mode = h->math_mode;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasSetPointerMode_v2(Handle* h, int mode) {
    if (!valid(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode != 0 && mode != 1) return CUBLAS_STATUS_INVALID_VALUE;
    h->pointer_mode = mode; // host and device scalars are both host-readable here
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasSetWorkspace_v2(Handle* h, void* ws, size_t bytes) {
    if (!valid(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->workspace = ws;
    h->workspace_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasGetVersion_v2(Handle* h, int* v) {
    if (!v) return CUBLAS_STATUS_INVALID_VALUE;
    (void)h;
    *v = 120804; // 12.8.4
    return CUBLAS_STATUS_SUCCESS;
}

// cublasGetProperty gives the version (libraryPropertyType: 0 major, 1
// minor, 2 patch): 12.8.4, CUDA 12.8's, like the stand-in driver and NVRTC.
API cublasStatus_t cublasGetProperty(int type, int* value) {
    if (!value) return CUBLAS_STATUS_INVALID_VALUE;
    switch (type) {
    case 0: *value = 12; return CUBLAS_STATUS_SUCCESS;
    case 1: *value = 8; return CUBLAS_STATUS_SUCCESS;
    case 2: *value = 4; return CUBLAS_STATUS_SUCCESS;
    }
    return CUBLAS_STATUS_INVALID_VALUE;
}

API const char* cublasGetStatusName(cublasStatus_t s) {
    switch (s) {
    case 0: return "CUBLAS_STATUS_SUCCESS";
    case 1: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case 3: return "CUBLAS_STATUS_ALLOC_FAILED";
    case 7: return "CUBLAS_STATUS_INVALID_VALUE";
    case 8: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case 11: return "CUBLAS_STATUS_MAPPING_ERROR";
    case 13: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case 14: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case 15: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

API const char* cublasGetStatusString(cublasStatus_t s) { return cublasGetStatusName(s); }

API cublasStatus_t cublasGemmEx(Handle* h, int ta, int tb, int m, int n, int k, const void* alpha, const void* A, int atype,
                                int lda, const void* B, int btype, int ldb, const void* beta, void* C, int ctype, int ldc,
                                int compute, int algo) {
    (void)algo;
    return gemm("cublasGemmEx", h, ta, tb, m, n, k, alpha, A, atype, lda, 0, B, btype, ldb, 0, beta, C, ctype, ldc, 0, 1,
                compute);
}

API cublasStatus_t cublasGemmStridedBatchedEx(Handle* h, int ta, int tb, int m, int n, int k, const void* alpha,
                                              const void* A, int atype, int lda, long long strideA, const void* B,
                                              int btype, int ldb, long long strideB, const void* beta, void* C, int ctype,
                                              int ldc, long long strideC, int batch, int compute, int algo) {
    (void)algo;
    return gemm("cublasGemmStridedBatchedEx", h, ta, tb, m, n, k, alpha, A, atype, lda, strideA, B, btype, ldb, strideB,
                beta, C, ctype, ldc, strideC, batch, compute);
}

API cublasStatus_t cublasSgemm_v2(Handle* h, int ta, int tb, int m, int n, int k, const float* alpha, const float* A,
                                  int lda, const float* B, int ldb, const float* beta, float* C, int ldc) {
    return gemm("cublasSgemm_v2", h, ta, tb, m, n, k, alpha, A, R_32F, lda, 0, B, R_32F, ldb, 0, beta, C, R_32F, ldc, 0, 1,
                68);
}
