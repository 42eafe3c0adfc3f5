// Causal grouped-query attention, flash style: keys and values stream
// through shared memory in tiles of AT rows and each query keeps a running
// max and sum (online softmax), so no T×T score matrix exists anywhere.
// One warp per query row (per key row in the dk/dv pass); lane l scores
// key l of the tile, then the probabilities are broadcast with shuffles
// while each lane accumulates its AD head dimensions.

#define AW 8  // warps (rows) per block
#define AT 32 // rows per shared-memory tile, one per lane
#define AD 8  // head dimensions per lane: head_dim <= 256

// load_pair copies cnt rows of hd elements, row r at base + r*stride of the
// tensors a and b, into shared-memory rows of stride sa and sb, with all
// the block's threads.
__device__ __forceinline__ void load_pair(float* da, int sa, float* db, int sb, const void* a, const void* b, i64 base,
                                          int stride, int cnt, int hd) {
    for (int e = threadIdx.x; e < cnt * hd; e += blockDim.x) {
        int r = e / hd, d = e - r * hd;
        i64 off = base + (i64)r * stride + d;
        da[r * sa + d] = ld(a, off);
        db[r * sb + d] = ld(b, off);
    }
}

// attention: out [B*T, heads*hd]; lse [B*T, heads]; q [B*T, heads*hd];
// k, v [slots*kvRows, kvHeads*hd]. Query i of sequence b sits at position
// past[b]+i and sees keys 0..past[b]+i of cache slot slots[b]. Grid
// (ceil(T/AW), heads, B), block 32*AW, shared (AT*(2hd+1) + AW*hd) floats.
extern "C" __global__ void attention(void* out, void* lse, const void* q, const void* k, const void* v,
                                     const int* past, const int* slots, int T, int heads, int kvHeads, int hd,
                                     int kvRows, float scale) {
    extern __shared__ float smem[];
    const int ks = hd + 1; // padded: lanes read different rows without bank conflicts
    float* Ks = smem;
    float* Vs = Ks + AT * ks;
    float* Qs = Vs + AT * hd;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int b = blockIdx.z, h = blockIdx.y;
    int kvh = h / (heads / kvHeads);
    int p0 = past ? past[b] : 0;
    int slot = slots ? slots[b] : b;
    int i = blockIdx.x * AW + warp;
    bool active = i < T;
    int ldq = heads * hd, ldk = kvHeads * hd;
    i64 qrow = ((i64)b * T + i) * ldq + (i64)h * hd;
    i64 kbase = (i64)slot * kvRows * ldk + (i64)kvh * hd;
    if (active)
        for (int d = lane; d < hd; d += 32) Qs[warp * hd + d] = ld(q, qrow + d) * scale;
    float m = NEG_INF, l = 0.f, acc[AD];
#pragma unroll
    for (int t = 0; t < AD; t++) acc[t] = 0.f;
    int lastQ = min(T, (int)(blockIdx.x + 1) * AW) - 1;
    int nkeys = p0 + lastQ + 1;
    int mine = p0 + i + 1; // keys this query sees
    for (int j0 = 0; j0 < nkeys; j0 += AT) {
        __syncthreads();
        int cnt = min(AT, nkeys - j0);
        load_pair(Ks, ks, Vs, hd, k, v, kbase + (i64)j0 * ldk, ldk, cnt, hd);
        __syncthreads();
        if (!active || j0 >= mine) continue;
        float s = NEG_INF;
        if (lane < cnt && j0 + lane < mine) {
            const float* kr = Ks + lane * ks;
            const float* qr = Qs + warp * hd;
            float dot = 0.f;
            for (int d = 0; d < hd; d++) dot += qr[d] * kr[d];
            s = dot;
        }
        float mn = fmaxf(m, warp_max(s));
        float corr = __expf(m - mn);
        float p = s == NEG_INF ? 0.f : __expf(s - mn);
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int t = 0; t < AD; t++) acc[t] *= corr;
        int lim = min(cnt, mine - j0);
        for (int jj = 0; jj < lim; jj++) {
            float pj = __shfl_sync(0xffffffffu, p, jj);
            const float* vr = Vs + jj * hd;
#pragma unroll
            for (int t = 0; t < AD; t++) {
                int d = lane + 32 * t;
                if (d < hd) acc[t] += pj * vr[d];
            }
        }
        m = mn;
    }
    if (!active) return;
    float inv = 1.f / l;
#pragma unroll
    for (int t = 0; t < AD; t++) {
        int d = lane + 32 * t;
        if (d < hd) st(out, qrow + d, acc[t] * inv);
    }
    if (lse && lane == 0) st(lse, ((i64)b * T + i) * heads + h, m + logf(l));
}

// attention_backward_pre: D[r, h] = sum over the head's dims of dout*out,
// one warp per (row, head).
extern "C" __global__ void attention_backward_pre(float* D, const void* dout, const void* out, int n, int heads, int hd) {
    i64 w = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (w >= (i64)n * heads) return;
    i64 base = w * hd; // rows are heads*hd wide, so (row, head) w starts at w*hd
    float s = 0.f;
    for (int d = lane; d < hd; d += 32) s += ld(dout, base + d) * ld(out, base + d);
    s = warp_sum(s);
    if (lane == 0) D[w] = s;
}

// attention_backward_dq overwrites dq: one warp per query row, keys in
// tiles. p = exp(scale q·k - lse), ds = p (dout·v - D), dq = scale Σ ds k.
// Grid (ceil(T/AW), heads, B); shared (2 AT (hd+1) + 2 AW hd) floats.
extern "C" __global__ void attention_backward_dq(void* dq, const void* dout, const void* q, const void* k, const void* v,
                                                 const void* lse, const float* D, int T, int heads, int kvHeads, int hd,
                                                 float scale) {
    extern __shared__ float smem[];
    const int ks = hd + 1;
    float* Ks = smem;
    float* Vs = Ks + AT * ks;
    float* Qs = Vs + AT * ks;
    float* Os = Qs + AW * hd;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int b = blockIdx.z, h = blockIdx.y;
    int kvh = h / (heads / kvHeads);
    int i = blockIdx.x * AW + warp;
    bool active = i < T;
    int ldq = heads * hd, ldk = kvHeads * hd;
    i64 r = (i64)b * T + i;
    i64 qrow = r * ldq + (i64)h * hd;
    i64 kbase = (i64)b * T * ldk + (i64)kvh * hd;
    float li = 0.f, Di = 0.f;
    if (active) {
        for (int d = lane; d < hd; d += 32) {
            Qs[warp * hd + d] = ld(q, qrow + d) * scale;
            Os[warp * hd + d] = ld(dout, qrow + d);
        }
        li = ld(lse, r * heads + h);
        Di = D[r * heads + h];
    }
    float acc[AD];
#pragma unroll
    for (int t = 0; t < AD; t++) acc[t] = 0.f;
    int nkeys = min(T, (int)(blockIdx.x + 1) * AW);
    for (int j0 = 0; j0 < nkeys; j0 += AT) {
        __syncthreads();
        int cnt = min(AT, nkeys - j0);
        load_pair(Ks, ks, Vs, ks, k, v, kbase + (i64)j0 * ldk, ldk, cnt, hd);
        __syncthreads();
        if (!active || j0 > i) continue;
        float ds = 0.f;
        if (lane < cnt && j0 + lane <= i) {
            const float* kr = Ks + lane * ks;
            const float* vr = Vs + lane * ks;
            const float* qr = Qs + warp * hd;
            const float* orow = Os + warp * hd;
            float s = 0.f, dp = 0.f;
            for (int d = 0; d < hd; d++) {
                s += qr[d] * kr[d];
                dp += orow[d] * vr[d];
            }
            float p = __expf(s - li);
            ds = p * (dp - Di);
        }
        int lim = min(cnt, i - j0 + 1);
        for (int jj = 0; jj < lim; jj++) {
            float dj = __shfl_sync(0xffffffffu, ds, jj);
            const float* kr = Ks + jj * ks;
#pragma unroll
            for (int t = 0; t < AD; t++) {
                int d = lane + 32 * t;
                if (d < hd) acc[t] += dj * kr[d];
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int t = 0; t < AD; t++) {
        int d = lane + 32 * t;
        if (d < hd) st(dq, qrow + d, acc[t] * scale);
    }
}

// attention_backward_dkv overwrites dk and dv: one warp per key row j of
// a KV head, summing over the query heads that share it and the queries
// i >= j, which stream through shared memory in tiles.
// dv = Σ p dout, dk = scale Σ ds q. Grid (ceil(T/AW), kvHeads, B);
// shared (2 AT (hd+1) + 2 AW hd + 2 AT) floats.
extern "C" __global__ void attention_backward_dkv(void* dk, void* dv, const void* dout, const void* q, const void* k,
                                                  const void* v, const void* lse, const float* D, int T, int heads,
                                                  int kvHeads, int hd, float scale) {
    extern __shared__ float smem[];
    const int ks = hd + 1;
    float* Qs = smem;
    float* Os = Qs + AT * ks;
    float* Kw = Os + AT * ks;
    float* Vw = Kw + AW * hd;
    float* Ls = Vw + AW * hd;
    float* Ds = Ls + AT;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int b = blockIdx.z, kvh = blockIdx.y;
    int group = heads / kvHeads;
    int j = blockIdx.x * AW + warp;
    bool active = j < T;
    int ldq = heads * hd, ldk = kvHeads * hd;
    i64 krow = ((i64)b * T + j) * ldk + (i64)kvh * hd;
    if (active)
        for (int d = lane; d < hd; d += 32) {
            Kw[warp * hd + d] = ld(k, krow + d) * scale;
            Vw[warp * hd + d] = ld(v, krow + d);
        }
    float ak[AD], av[AD];
#pragma unroll
    for (int t = 0; t < AD; t++) ak[t] = av[t] = 0.f;
    int first = blockIdx.x * AW;
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        for (int i0 = first; i0 < T; i0 += AT) {
            __syncthreads();
            int cnt = min(AT, T - i0);
            load_pair(Qs, ks, Os, ks, q, dout, ((i64)b * T + i0) * ldq + (i64)h * hd, ldq, cnt, hd);
            for (int e = threadIdx.x; e < cnt; e += blockDim.x) {
                i64 rh = ((i64)b * T + i0 + e) * heads + h;
                Ls[e] = ld(lse, rh);
                Ds[e] = D[rh];
            }
            __syncthreads();
            if (!active) continue;
            float p = 0.f, ds = 0.f;
            int i = i0 + lane;
            if (lane < cnt && i >= j) {
                const float* qr = Qs + lane * ks;
                const float* orow = Os + lane * ks;
                const float* kr = Kw + warp * hd;
                const float* vr = Vw + warp * hd;
                float s = 0.f, dp = 0.f;
                for (int d = 0; d < hd; d++) {
                    s += qr[d] * kr[d];
                    dp += orow[d] * vr[d];
                }
                p = __expf(s - Ls[lane]);
                ds = p * (dp - Ds[lane]);
            }
            for (int ii = 0; ii < cnt; ii++) {
                float pi = __shfl_sync(0xffffffffu, p, ii);
                float di = __shfl_sync(0xffffffffu, ds, ii);
                const float* qr = Qs + ii * ks;
                const float* orow = Os + ii * ks;
#pragma unroll
                for (int t = 0; t < AD; t++) {
                    int d = lane + 32 * t;
                    if (d < hd) {
                        av[t] += pi * orow[d];
                        ak[t] += di * qr[d];
                    }
                }
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int t = 0; t < AD; t++) {
        int d = lane + 32 * t;
        if (d < hd) {
            st(dk, krow + d, ak[t] * scale);
            st(dv, krow + d, av[t]);
        }
    }
}
