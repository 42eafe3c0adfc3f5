// LayerNorm (with weight offset, Nemotron's LayerNorm1P) and RMSNorm, one
// block per row. Statistics are computed in two passes over the row (the
// row stays in L1/L2), like the CPU reference.

// Rows move 8 elements a step (16-byte accesses) when d is a multiple of 8
// and every row involved starts 16-byte aligned; else one at a time.

extern "C" __global__ void __launch_bounds__(1024) layernorm(void* out, void* stats, const void* x, const void* w, const void* bias,
                                                             int n, int d, float eps, float woff) {
    i64 row = (i64)blockIdx.x * d;
    const int V = (d & 7) == 0 && vec8_ok(x, row) && vec8_ok(out, row) && vec8_ok(w, 0) && (!bias || vec8_ok(bias, 0)) ? 8 : 1;
    float s = 0.f;
    for (int j = threadIdx.x * V; j < d; j += blockDim.x * V) {
        float xv[8];
        ldv(x, row + j, xv, V);
        UNROLL
        for (int e = 0; e < 8; e++)
            if (e < V) s += xv[e];
    }
    float mean = block_sum(s) / d;
    float ss = 0.f;
    for (int j = threadIdx.x * V; j < d; j += blockDim.x * V) {
        float xv[8];
        ldv(x, row + j, xv, V);
        UNROLL
        for (int e = 0; e < 8; e++)
            if (e < V) ss += (xv[e] - mean) * (xv[e] - mean);
    }
    float rstd = rsqrtf(block_sum(ss) / d + eps);
    for (int j = threadIdx.x * V; j < d; j += blockDim.x * V) {
        float xv[8], wv[8], bv[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        ldv(x, row + j, xv, V);
        ldv(w, j, wv, V);
        if (bias) ldv(bias, j, bv, V);
        UNROLL
        for (int e = 0; e < 8; e++)
            if (e < V) xv[e] = (xv[e] - mean) * rstd * (wv[e] + woff) + bv[e];
        stv(out, row + j, xv, V);
    }
    if (stats && threadIdx.x == 0) {
        st(stats, 2 * (i64)blockIdx.x, mean);
        st(stats, 2 * (i64)blockIdx.x + 1, rstd);
    }
}

extern "C" __global__ void __launch_bounds__(1024) rmsnorm(void* out, void* stats, const void* x, const void* w, int n, int d, float eps) {
    i64 row = (i64)blockIdx.x * d;
    const int V = (d & 7) == 0 && vec8_ok(x, row) && vec8_ok(out, row) && vec8_ok(w, 0) ? 8 : 1;
    float ss = 0.f;
    for (int j = threadIdx.x * V; j < d; j += blockDim.x * V) {
        float xv[8];
        ldv(x, row + j, xv, V);
        UNROLL
        for (int e = 0; e < 8; e++)
            if (e < V) ss += xv[e] * xv[e];
    }
    float r = rsqrtf(block_sum(ss) / d + eps);
    for (int j = threadIdx.x * V; j < d; j += blockDim.x * V) {
        float xv[8], wv[8];
        ldv(x, row + j, xv, V);
        ldv(w, j, wv, V);
        UNROLL
        for (int e = 0; e < 8; e++)
            if (e < V) xv[e] = xv[e] * r * wv[e];
        stv(out, row + j, xv, V);
    }
    if (stats && threadIdx.x == 0) st(stats, blockIdx.x, r);
}

// xhat reads the normalized input: kind 0 is LayerNorm (stats mean, rstd),
// kind 1 RMSNorm (stats rstd).
__device__ __forceinline__ float xhat(const void* x, const void* stats, int kind, int i, i64 off) {
    if (kind == 0) return (ld(x, off) - ld(stats, 2 * (i64)i)) * ld(stats, 2 * (i64)i + 1);
    return ld(x, off) * ld(stats, i);
}

// dx_inputs reads V elements of dout and x from column j of a row, and of w.
__device__ __forceinline__ void dx_inputs(float gv[8], float wv[8], float xv[8], const void* dout, const void* w, const void* x,
                                          i64 row, int j, int V) {
    ldv(dout, row + j, gv, V);
    ldv(w, j, wv, V);
    ldv(x, row + j, xv, V);
}

// norm_backward_dx overwrites dx for one row per block:
// g = dout*(w+woff); dx = rstd*(g - mean(g) - xhat*mean(g*xhat)), without
// the mean(g) term for RMSNorm. dx may alias dout.
extern "C" __global__ void __launch_bounds__(1024) norm_backward_dx(void* dx, const void* dout, const void* x, const void* w, const void* stats,
                                                                    int kind, int n, int d, float woff) {
    int i = blockIdx.x;
    i64 row = (i64)i * d;
    const int V = (d & 7) == 0 && vec8_ok(dx, row) && vec8_ok(dout, row) && vec8_ok(x, row) && vec8_ok(w, 0) ? 8 : 1;
    float rstd = kind == 0 ? ld(stats, 2 * (i64)i + 1) : ld(stats, i);
    float mean = kind == 0 ? ld(stats, 2 * (i64)i) : 0.f; // xhat = (x - mean) * rstd
    float sg = 0.f, sgx = 0.f;
    for (int j = threadIdx.x * V; j < d; j += blockDim.x * V) {
        float gv[8], wv[8], xv[8];
        dx_inputs(gv, wv, xv, dout, w, x, row, j, V);
        UNROLL
        for (int e = 0; e < 8; e++)
            if (e < V) {
                float g = gv[e] * (wv[e] + woff);
                sg += g;
                sgx += g * (xv[e] - mean) * rstd;
            }
    }
    float mg = kind == 0 ? block_sum(sg) / d : 0.f;
    float mgx = block_sum(sgx) / d;
    for (int j = threadIdx.x * V; j < d; j += blockDim.x * V) {
        float gv[8], wv[8], xv[8];
        dx_inputs(gv, wv, xv, dout, w, x, row, j, V);
        UNROLL
        for (int e = 0; e < 8; e++)
            if (e < V) gv[e] = rstd * (gv[e] * (wv[e] + woff) - mg - (xv[e] - mean) * rstd * mgx);
        stv(dx, row + j, gv, V);
    }
}

// norm_backward_dw_partial sums dout*xhat (and dout, for the bias) over
// the rows of one chunk, for 32 columns per block: block (32, 8), grid
// (ceil(d/32), chunks). part is float32 [chunks, 2, d].
extern "C" __global__ void __launch_bounds__(256) norm_backward_dw_partial(float* part, const void* dout, const void* x, const void* stats,
                                                                           int kind, int n, int d, int rowsPerChunk) {
    __shared__ float sw[8][33], sb[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * rowsPerChunk, r1 = min(n, r0 + rowsPerChunk);
    float aw = 0.f, ab = 0.f;
    if (c < d) {
        for (int i = r0 + threadIdx.y; i < r1; i += 8) {
            i64 off = (i64)i * d + c;
            float g = ld(dout, off);
            aw += g * xhat(x, stats, kind, i, off);
            ab += g;
        }
    }
    sw[threadIdx.y][threadIdx.x] = aw;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && c < d) {
        for (int k = 1; k < 8; k++) {
            aw += sw[k][threadIdx.x];
            ab += sb[k][threadIdx.x];
        }
        part[(2 * (i64)blockIdx.y) * d + c] = aw;
        part[(2 * (i64)blockIdx.y + 1) * d + c] = ab;
    }
}

// norm_backward_dw_finish adds the chunk sums, in chunk order, to dw (and
// to dbias when it is given).
extern "C" __global__ void __launch_bounds__(256) norm_backward_dw_finish(void* dw, void* dbias, const float* part, int chunks, int d) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d) return;
    float aw = 0.f, ab = 0.f;
    for (int k = 0; k < chunks; k++) {
        aw += part[(2 * (i64)k) * d + c];
        ab += part[(2 * (i64)k + 1) * d + c];
    }
    st(dw, c, ld(dw, c) + aw);
    if (dbias) st(dbias, c, ld(dbias, c) + ab);
}

// rope rotates the first rotDim dims of every head of x [n, heads*headDim]
// in place, pairs (i, i + rotDim/2), by pos*invFreq[i] (negated when
// inverse). One thread per pair.
extern "C" __global__ void __launch_bounds__(256) rope(void* x, const int* pos, const float* invFreq, int n, int heads, int headDim, int rotDim, int inverse) {
    int half = rotDim / 2;
    i64 total = (i64)n * heads * half;
    GRID_STRIDE(t, total) {
        int i = (int)(t % half);
        i64 rh = t / half;
        int h = (int)(rh % heads);
        int r = (int)(rh / heads);
        double sd, cd; // the angle in double precision, as the CPU reference does
        sincos((double)pos[r] * (double)invFreq[i], &sd, &cd);
        float s = inverse ? -(float)sd : (float)sd, c = (float)cd;
        i64 base = (i64)r * heads * headDim + (i64)h * headDim;
        float a = ld(x, base + i), b = ld(x, base + i + half);
        st(x, base + i, a * c - b * s);
        st(x, base + i + half, b * c + a * s);
    }
}
