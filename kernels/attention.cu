// Causal grouped-query attention on tensor cores, FlashAttention-2 style:
// query rows stay in one block while keys and values stream through shared
// memory (cp.async), scores and probabilities live in registers as mma
// accumulators (online softmax), and no T×T matrix exists anywhere.
//
// Rows. The query heads sharing a KV head are packed into the rows of one
// problem: for sequence b and KV head kvh, row r is query i = r / group of
// head kvh*group + r % group (group = heads / kvHeads). A block's keys and
// values are read once for the whole group, decode (T = 1) still fills a
// tile, and dk/dv sum over the group's heads without atomics.
//
// Head dimension. Kernels exist for D = 32, 64, 128 and 256; a head of hd
// <= D dimensions is zero-padded to D in shared memory (zeros add nothing
// to a dot product, and padded output columns are never stored).
//
// Shared-memory tiles are rows of D bf16 values in 16-byte chunks, chunk c
// of row r stored at position c ^ (r % 8) (fewer positions when D < 64),
// so the eight rows one ldmatrix reads fall in different banks.

// Forward tile shapes: W warps, each holding MT m-tiles of 16 rows; key
// tiles of BN rows.
template <int D> struct FwdShape;
template <> struct FwdShape<32> { enum { W = 4, MT = 1, BN = 64 }; };
template <> struct FwdShape<64> { enum { W = 4, MT = 2, BN = 64 }; };
template <> struct FwdShape<128> { enum { W = 4, MT = 2, BN = 32 }; };
template <> struct FwdShape<256> { enum { W = 4, MT = 1, BN = 32 }; };

// Backward tile shapes: W warps, each owning 16 keys (BN = 16 W keys per
// block); query tiles of BM rows; each block produces DS of the D output
// columns of dk, dv and dq (DS < D splits a wide head over D/DS blocks so
// the accumulators fit in registers).
template <int D> struct BwdShape;
template <> struct BwdShape<32> { enum { W = 4, BM = 64, DS = 32 }; };
template <> struct BwdShape<64> { enum { W = 8, BM = 64, DS = 64 }; };
template <> struct BwdShape<128> { enum { W = 8, BM = 32, DS = 128 }; };
template <> struct BwdShape<256> { enum { W = 4, BM = 32, DS = 128 }; };

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

// tile_at returns the address of chunk c (8 values) of row r in a
// swizzled tile of D columns.
template <int D> __device__ __forceinline__ bf16* tile_at(bf16* t, int r, int c) {
    const int sw = (D / 8 < 8 ? D / 8 : 8) - 1;
    return t + r * D + ((c ^ (r & sw)) << 3);
}

// Rows maps a tile row to a tensor element offset: packed row pr of a
// problem is at base + (pr / group) * ld + (pr % group) * hd.
struct Rows {
    const void* p; // tagged tensor address
    i64 base;
    int ld, group, hd;
    bool fast; // bf16 with 16-byte aligned rows: cp.async applies

    __device__ __forceinline__ i64 off(int pr) const { return base + (i64)(pr / group) * ld + (i64)(pr % group) * hd; }
};

__device__ __forceinline__ Rows make_rows(const void* p, i64 base, int ld, int group, int hd) {
    Rows r;
    r.p = p;
    r.base = base;
    r.ld = ld;
    r.group = group;
    r.hd = hd;
    r.fast = is_bf(p) && (((u64)p - 1) & 15) == 0 && (hd & 7) == 0 && (ld & 7) == 0 && (base & 7) == 0;
    return r;
}

// load_tile copies packed rows r0 .. r0+ROWS-1 (those below lim; the rest
// and the columns from hd to D are zeros) into a swizzled tile, with all
// NT threads of the block. bf16 rows go by cp.async (the caller commits
// and waits); others are converted on the way.
template <int D, int ROWS, int NT>
__device__ __forceinline__ void load_tile(bf16* t, const Rows& s, int r0, int lim) {
    const int CH = D / 8;
    for (int e = threadIdx.x; e < ROWS * CH; e += NT) {
        int r = e / CH, c = e - r * CH;
        int pr = r0 + r;
        bf16* dst = tile_at<D>(t, r, c);
        bool in = pr < lim && c * 8 < s.hd;
        if (in && s.fast) {
            cp_async_16(dst, (const bf16*)((u64)s.p - 1) + s.off(pr) + c * 8);
            continue;
        }
        float f[8];
        i64 o = in ? s.off(pr) + c * 8 : 0;
        int n = in ? s.hd - c * 8 : 0;
UNROLL
        for (int x = 0; x < 8; x++) f[x] = x < n ? ld(s.p, o + x) : 0.f;
        u32x4 v;
        v.x = pack_bf16(f[0], f[1]);
        v.y = pack_bf16(f[2], f[3]);
        v.z = pack_bf16(f[4], f[5]);
        v.w = pack_bf16(f[6], f[7]);
        *(u32x4*)dst = v;
    }
}

// A fragment (16×16) at rows r0.., chunk pair c0, c0+1 of a tile.
template <int D> __device__ __forceinline__ void frag_a(u32 a[4], bf16* t, int r0, int c0) {
    int lane = threadIdx.x & 31;
    ldmatrix_x4(a, tile_at<D>(t, r0 + (lane & 15), c0 + (lane >> 4)));
}

// Two B fragments (k = 16 columns from chunk c0, n = 16 rows from r0) of a
// tile holding Bᵀ row-major ([n][k]): b[0..1] for rows r0..r0+7, b[2..3]
// for r0+8..r0+15.
template <int D> __device__ __forceinline__ void frag_bt(u32 b[4], bf16* t, int r0, int c0) {
    int lane = threadIdx.x & 31;
    ldmatrix_x4(b, tile_at<D>(t, r0 + (lane & 7) + ((lane >> 4) << 3), c0 + ((lane >> 3) & 1)));
}

// Two B fragments (k = 16 rows from r0, n = 16 columns from chunk c0) of a
// tile holding B row-major ([k][n]), transposed by ldmatrix: b[0..1] for
// columns c0*8.., b[2..3] for the next 8.
template <int D> __device__ __forceinline__ void frag_b(u32 b[4], bf16* t, int r0, int c0) {
    int lane = threadIdx.x & 31;
    ldmatrix_x4_trans(b, tile_at<D>(t, r0 + (lane & 7) + (((lane >> 3) & 1) << 3), c0 + (lane >> 4)));
}

// A fragment (16×16) of Aᵀ stored row-major ([k][m]) at rows (k) r0..,
// chunk (m) c0, transposed by ldmatrix.
template <int D> __device__ __forceinline__ void frag_at(u32 a[4], bf16* t, int r0, int c0) {
    int lane = threadIdx.x & 31;
    int q = lane >> 3;
    ldmatrix_x4_trans(a, tile_at<D>(t, r0 + ((q >> 1) << 3) + (lane & 7), c0 + (q & 1)));
}

__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// attn_fwd: grid (row tiles × nsplit, kvHeads, B), block 32 W threads.
// With nsplit > 1 each block covers 1/nsplit of its rows' keys and writes
// a partial result to part for attention_combine: the output normalized
// over its keys alone (float32 rows of D) and their log-sum-exp (-inf for
// a part with no visible key); otherwise it writes out and lse directly.
template <int D>
__device__ __forceinline__ void attn_fwd(void* out, void* lse, float* part, const void* q, const void* k, const void* v,
                                         const int* past, const int* slots, int T, int heads, int kvHeads, int hd,
                                         int kvRows, float scale, int nsplit) {
    enum { W = FwdShape<D>::W, MT = FwdShape<D>::MT, BN = FwdShape<D>::BN, BM = 16 * MT * W, NT = 32 * W };
    extern __shared__ float smem[];
    bf16* Qs = (bf16*)smem;
    bf16* Ks = Qs + BM * D;
    bf16* Vs = Ks + BN * D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
    const int b = blockIdx.z, kvh = blockIdx.y;
    const int group = heads / kvHeads, R = T * group;
    const int tiles = gridDim.x / nsplit;
    const int split = blockIdx.x % nsplit;
    const int mtile = tiles - 1 - (int)blockIdx.x / nsplit; // the longest rows first
    const int row0 = mtile * BM;
    const int p0 = past ? past[b] : 0;
    const int slot = slots ? slots[b] : b;
    const int ldq = heads * hd, ldk = kvHeads * hd;
    Rows qr = make_rows(q, (i64)b * T * ldq + (i64)kvh * group * hd, ldq, group, hd);
    Rows kr = make_rows(k, (i64)slot * kvRows * ldk + (i64)kvh * hd, ldk, 1, hd);
    Rows vr = make_rows(v, kr.base, ldk, 1, hd);

    // Keys of this block: those its last row sees, split evenly in tiles.
    const int lastRow = min(R, row0 + BM) - 1;
    const int nkeys = p0 + lastRow / group + 1;
    const int ntiles = (nkeys + BN - 1) / BN;
    const int per = (ntiles + nsplit - 1) / nsplit;
    const int kbeg = split * per * BN, kend = min(nkeys, (split + 1) * per * BN);

    // Row state: this thread's rows are wrow + mt*16 + g + 8h.
    const int wrow = row0 + warp * 16 * MT;
    float m[MT][2], l[MT][2], o[MT][D / 8][4];
    int lim[MT][2];
UNROLL
    for (int mt = 0; mt < MT; mt++)
UNROLL
        for (int h = 0; h < 2; h++) {
            m[mt][h] = NEG_INF;
            l[mt][h] = 0.f;
            int r = wrow + mt * 16 + g + 8 * h;
            lim[mt][h] = min(kend, p0 + r / group + 1); // keys below lim are visible to row r
        }
UNROLL
    for (int mt = 0; mt < MT; mt++)
UNROLL
        for (int n = 0; n < D / 8; n++) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.f;
    // The warp's first row sees the fewest keys: tiles below its limit need no mask.
    const int wlim = min(kend, p0 + min(wrow, R - 1) / group + 1);
    const bool warpActive = wrow < R;
    const float sl2 = scale * LOG2E;

    load_tile<D, BM, NT>(Qs, qr, row0, R);
    if (kbeg < kend) load_tile<D, BN, NT>(Ks, kr, kbeg, kend);
    cp_async_commit();
    for (int j0 = kbeg; j0 < kend; j0 += BN) {
        cp_async_wait<0>();
        __syncthreads(); // K tile (and Q) landed; every warp is done with the previous V tile
        load_tile<D, BN, NT>(Vs, vr, j0, kend);
        cp_async_commit();
        float s[MT][BN / 8][4];
        if (warpActive) {
UNROLL
            for (int mt = 0; mt < MT; mt++)
UNROLL
                for (int n = 0; n < BN / 8; n++) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
UNROLL
            for (int ks = 0; ks < D / 16; ks++) {
                u32 a[MT][4];
UNROLL
                for (int mt = 0; mt < MT; mt++) frag_a<D>(a[mt], Qs, warp * 16 * MT + mt * 16, 2 * ks);
UNROLL
                for (int n2 = 0; n2 < BN / 16; n2++) {
                    u32 bb[4];
                    frag_bt<D>(bb, Ks, n2 * 16, 2 * ks);
UNROLL
                    for (int mt = 0; mt < MT; mt++) {
                        mma_bf16_16816(s[mt][2 * n2], a[mt], bb);
                        mma_bf16_16816(s[mt][2 * n2 + 1], a[mt], bb + 2);
                    }
                }
            }
            // Online softmax in the log2 domain: x = s * scale * log2(e).
            const bool masked = j0 + BN > wlim;
UNROLL
            for (int mt = 0; mt < MT; mt++)
UNROLL
                for (int h = 0; h < 2; h++) {
                    float mx = NEG_INF;
UNROLL
                    for (int n = 0; n < BN / 8; n++)
UNROLL
                        for (int e = 0; e < 2; e++) {
                            float x = s[mt][n][2 * h + e] * sl2;
                            if (masked && j0 + n * 8 + 2 * t4 + e >= lim[mt][h]) x = NEG_INF;
                            s[mt][n][2 * h + e] = x;
                            mx = fmaxf(mx, x);
                        }
                    float mn = fmaxf(m[mt][h], quad_max(mx));
                    float base = mn == NEG_INF ? 0.f : mn; // a row with no key yet: nothing to rescale
                    float corr = fast_exp2(m[mt][h] - base);
                    m[mt][h] = mn;
                    float sum = 0.f;
UNROLL
                    for (int n = 0; n < BN / 8; n++)
UNROLL
                        for (int e = 0; e < 2; e++) {
                            float p = fast_exp2(s[mt][n][2 * h + e] - base);
                            s[mt][n][2 * h + e] = p;
                            sum += p;
                        }
                    l[mt][h] = l[mt][h] * corr + sum;
UNROLL
                    for (int n = 0; n < D / 8; n++) {
                        o[mt][n][2 * h] *= corr;
                        o[mt][n][2 * h + 1] *= corr;
                    }
                }
        }
        cp_async_wait<0>();
        __syncthreads(); // V tile landed; every warp is done with this K tile
        if (j0 + BN < kend) load_tile<D, BN, NT>(Ks, kr, j0 + BN, kend);
        cp_async_commit();
        if (warpActive) {
            // o += p v, p rounded to bf16 as the A operand.
UNROLL
            for (int kk = 0; kk < BN / 16; kk++) {
                u32 pa[MT][4];
UNROLL
                for (int mt = 0; mt < MT; mt++) {
                    pa[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                    pa[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                    pa[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                    pa[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
                }
UNROLL
                for (int d2 = 0; d2 < D / 16; d2++) {
                    u32 bb[4];
                    frag_b<D>(bb, Vs, kk * 16, 2 * d2);
UNROLL
                    for (int mt = 0; mt < MT; mt++) {
                        mma_bf16_16816(o[mt][2 * d2], pa[mt], bb);
                        mma_bf16_16816(o[mt][2 * d2 + 1], pa[mt], bb + 2);
                    }
                }
            }
        }
    }
    cp_async_wait<0>();
    if (!warpActive) return;
    const i64 pbase = (((i64)split * gridDim.z + b) * kvHeads + kvh) * (i64)(tiles * BM);
UNROLL
    for (int mt = 0; mt < MT; mt++)
UNROLL
        for (int h = 0; h < 2; h++) {
            int r = wrow + mt * 16 + g + 8 * h;
            float lsum = quad_sum(l[mt][h]);
            if (r >= R) continue;
            float inv = lsum > 0.f ? 1.f / lsum : 0.f;
            float ls = lsum > 0.f ? (m[mt][h] + log2f(lsum)) * LN2 : NEG_INF;
            if (nsplit > 1) {
                float* po = part + (pbase + r) * D;
UNROLL
                for (int n = 0; n < D / 8; n++) {
                    po[n * 8 + 2 * t4] = o[mt][n][2 * h] * inv;
                    po[n * 8 + 2 * t4 + 1] = o[mt][n][2 * h + 1] * inv;
                }
                if (t4 == 0) part[(i64)nsplit * gridDim.z * kvHeads * tiles * BM * D + pbase + r] = ls;
                continue;
            }
            i64 oo = qr.off(r);
UNROLL
            for (int n = 0; n < D / 8; n++) {
                int c = n * 8 + 2 * t4;
                if (c < hd) st(out, oo + c, o[mt][n][2 * h] * inv);
                if (c + 1 < hd) st(out, oo + c + 1, o[mt][n][2 * h + 1] * inv);
            }
            if (lse && t4 == 0) st(lse, ((i64)b * T + r / group) * heads + kvh * group + r % group, ls);
        }
}

// The forward kernels, one per padded head dimension. Shared memory
// (BM + 2 BN) D bf16 values; see attnShapes in backend/cuda/ops.go.
extern "C" __global__ void __launch_bounds__(128) attention_fwd_d32(void* out, void* lse, float* part, const void* q, const void* k, const void* v,
                                                                    const int* past, const int* slots, int T, int heads, int kvHeads, int hd,
                                                                    int kvRows, float scale, int nsplit) {
    attn_fwd<32>(out, lse, part, q, k, v, past, slots, T, heads, kvHeads, hd, kvRows, scale, nsplit);
}
extern "C" __global__ void __launch_bounds__(128) attention_fwd_d64(void* out, void* lse, float* part, const void* q, const void* k, const void* v,
                                                                    const int* past, const int* slots, int T, int heads, int kvHeads, int hd,
                                                                    int kvRows, float scale, int nsplit) {
    attn_fwd<64>(out, lse, part, q, k, v, past, slots, T, heads, kvHeads, hd, kvRows, scale, nsplit);
}
extern "C" __global__ void __launch_bounds__(128) attention_fwd_d128(void* out, void* lse, float* part, const void* q, const void* k, const void* v,
                                                                     const int* past, const int* slots, int T, int heads, int kvHeads, int hd,
                                                                     int kvRows, float scale, int nsplit) {
    attn_fwd<128>(out, lse, part, q, k, v, past, slots, T, heads, kvHeads, hd, kvRows, scale, nsplit);
}
extern "C" __global__ void __launch_bounds__(128) attention_fwd_d256(void* out, void* lse, float* part, const void* q, const void* k, const void* v,
                                                                     const int* past, const int* slots, int T, int heads, int kvHeads, int hd,
                                                                     int kvRows, float scale, int nsplit) {
    attn_fwd<256>(out, lse, part, q, k, v, past, slots, T, heads, kvHeads, hd, kvRows, scale, nsplit);
}

// attention_combine merges the nsplit partials of split-key attention
// (flash-decoding): out = Σ_s e^(lse_s - M) o_s / Σ_s e^(lse_s - M) and
// lse = M + log Σ_s e^(lse_s - M). One warp per row; grid (ceil(rows/8),
// kvHeads, B) with 256 threads, rows = T * heads / kvHeads, rpad rows per
// problem in part, each of D floats.
extern "C" __global__ void __launch_bounds__(256) attention_combine(void* out, void* lse, const float* part, int T, int heads, int kvHeads, int hd,
                                                                    int D, int rpad, int nsplit) {
    int lane = threadIdx.x & 31;
    int r = blockIdx.x * 8 + (threadIdx.x >> 5);
    int b = blockIdx.z, kvh = blockIdx.y, group = heads / kvHeads;
    if (r >= T * group) return;
    i64 stride = (i64)gridDim.z * kvHeads * rpad; // rows per split
    i64 row = ((i64)b * kvHeads + kvh) * rpad + r;
    const float* pl = part + (i64)nsplit * stride * D;
    float mx = NEG_INF;
    for (int s = 0; s < nsplit; s++) mx = fmaxf(mx, pl[s * stride + row]);
    float base = mx == NEG_INF ? 0.f : mx;
    float z = 0.f;
    for (int s = 0; s < nsplit; s++) z += __expf(pl[s * stride + row] - base);
    float inv = z > 0.f ? 1.f / z : 0.f;
    i64 oo = ((i64)b * T + r / group) * heads * hd + (i64)(kvh * group + r % group) * hd;
    for (int d = lane; d < hd; d += 32) {
        float acc = 0.f;
        for (int s = 0; s < nsplit; s++) {
            float w = __expf(pl[s * stride + row] - base);
            if (w > 0.f) acc += w * part[(s * stride + row) * D + d];
        }
        st(out, oo + d, acc * inv);
    }
    if (lse && lane == 0) st(lse, ((i64)b * T + r / group) * heads + kvh * group + r % group, z > 0.f ? base + logf(z) : NEG_INF);
}

// attention_backward_pre: Dv[r, h] = sum over the head's dims of dout*out,
// one warp per (row, head).
extern "C" __global__ void __launch_bounds__(256) attention_backward_pre(float* Dv, const void* dout, const void* out, int n, int heads, int hd) {
    i64 w = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (w >= (i64)n * heads) return;
    i64 base = w * hd; // rows are heads*hd wide, so (row, head) w starts at w*hd
    float s = 0.f;
    for (int d = lane; d < hd; d += 32) s += ld(dout, base + d) * ld(out, base + d);
    s = warp_sum(s);
    if (lane == 0) Dv[w] = s;
}

// attn_bwd computes dk and dv of a tile of BN keys (rows of the KV cache
// slot) and that tile's part of dq, FlashAttention-2 style: for each query
// tile that sees the keys, p = exp(scale q·k - lse) and ds = p (dout·v - Dv)
// are recomputed in registers, then dv += pᵀ dout, dk += dsᵀ q (in
// registers, summed over the group's heads since they are rows here), and
// dq += ds k. dq is summed over key tiles in a fixed order: the block of key
// tile j adds its part once the block of tile j-1 has (a counter per query
// tile in sem, zeroed before the launch), so the result does not depend
// on timing; the first writes dqacc, the last stores dq.
//
// A block waits only for blocks that have started: blocks take their
// (key tile, column slice, head, sequence) from a ticket, sem[0] counted
// up as they start, in place of blockIdx (CUDA does not promise to start
// blocks in index order, and a block spinning on one that has not started
// could hold the multiprocessor it needs). Tile j-1 has a smaller ticket
// than tile j, so its block is running or done, and waits only on smaller
// tickets in turn.
//
// Grid (key tiles × D/DS, kvHeads, B), block 32 W threads; key tiles cover
// the slot's kvRows rows (those no query sees get zero gradients). dqacc
// holds float32 rows of D per problem, sem the ticket counter and then an
// int per (b, kvh, query tile, column slice).
template <int D>
__device__ __forceinline__ void attn_bwd(void* dq, void* dk, void* dv, float* dqacc, int* sem, const void* dout,
                                         const void* q, const void* k, const void* v, const void* lse, const float* Dv,
                                         const int* past, const int* slots, int T, int heads, int kvHeads, int hd,
                                         int kvRows, float scale) {
    enum { W = BwdShape<D>::W, BM = BwdShape<D>::BM, DS = BwdShape<D>::DS, BN = 16 * W, NT = 32 * W, NS = D / DS };
    extern __shared__ float smem[];
    bf16* Ks = (bf16*)smem;
    bf16* Vs = Ks + BN * D;
    bf16* Qs = Vs + BN * D;           // two buffers
    bf16* Os = Qs + 2 * BM * D;       // dout, two buffers
    bf16* Ss = Os + 2 * BM * D;       // dsᵀ, [key][query], BN × BM
    float* Ls = (float*)(Ss + BN * BM); // lse of two query tiles
    float* Ds = Ls + 2 * BM;            // Dv of two query tiles
    // The block's place, from its ticket: sequence, KV head, key tile,
    // column slice. The loop over query tiles reads the sequence and head
    // from here again (volatile) rather than holding them in registers:
    // blockIdx, which they replace, costs none.
    volatile int* place = (int*)(Ds + 2 * BM);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
    if (threadIdx.x == 0) {
        const int id = atomicAdd(sem, 1), bx = id % gridDim.x, by = id / gridDim.x; // the block's place in the grid
        place[0] = by / gridDim.y;
        place[1] = by % gridDim.y;
        place[2] = bx / NS;
        place[3] = bx % NS;
    }
    __syncthreads();
    const int b = place[0], kvh = place[1];
    const int jt = place[2], cs = place[3]; // key tile, column slice
    const int group = heads / kvHeads, R = T * group;
    const int p0 = past ? past[b] : 0;
    const int slot = slots ? slots[b] : b;
    const int ldq = heads * hd, ldk = kvHeads * hd;
    const int qtiles = (R + BM - 1) / BM;
    Rows qr = make_rows(q, (i64)b * T * ldq + (i64)kvh * group * hd, ldq, group, hd);
    Rows orr = make_rows(dout, qr.base, ldq, group, hd);
    Rows kr = make_rows(k, (i64)slot * kvRows * ldk + (i64)kvh * hd, ldk, 1, hd);
    Rows vr = make_rows(v, kr.base, ldk, 1, hd);
    const int j0 = jt * BN;
    const int nk = p0 + T; // keys that exist for these queries
    const int kw = warp * 16; // this warp's keys within the tile
    const int c0 = cs * DS;   // first output column of the slice
    float adk[DS / 8][4], adv[DS / 8][4];
UNROLL
    for (int n = 0; n < DS / 8; n++) adk[n][0] = adk[n][1] = adk[n][2] = adk[n][3] = adv[n][0] = adv[n][1] = adv[n][2] = adv[n][3] = 0.f;

    // The first query tile whose last row sees key j0.
    int first = qtiles;
    if (j0 < nk) {
        int r = max(0, (j0 - p0) * group); // first row that sees key j0
        first = r / BM;
    }
    if (first < qtiles) {
        load_tile<D, BN, NT>(Ks, kr, j0, nk);
        load_tile<D, BN, NT>(Vs, vr, j0, nk);
        load_tile<D, BM, NT>(Qs, qr, first * BM, R);
        load_tile<D, BM, NT>(Os, orr, first * BM, R);
        cp_async_commit();
        for (int e = threadIdx.x; e < BM; e += NT) {
            int r = first * BM + e;
            bool in = r < R;
            i64 li = ((i64)b * T + r / group) * heads + kvh * group + r % group;
            Ls[e] = in ? ld(lse, li) * LOG2E : 0.f;
            Ds[e] = in ? Dv[li] : 0.f;
        }
    }
    const float sl2 = scale * LOG2E;
    for (int it = first; it < qtiles; it++) {
        const int buf = (it - first) & 1;
        bf16* Qc = Qs + buf * BM * D;
        bf16* Oc = Os + buf * BM * D;
        float* Lc = Ls + buf * BM;
        float* Dc = Ds + buf * BM;
        cp_async_wait<0>();
        __syncthreads(); // this query tile landed; the other buffer is free
        if (it + 1 < qtiles) {
            load_tile<D, BM, NT>(Qs + (buf ^ 1) * BM * D, qr, (it + 1) * BM, R);
            load_tile<D, BM, NT>(Os + (buf ^ 1) * BM * D, orr, (it + 1) * BM, R);
            for (int e = threadIdx.x; e < BM; e += NT) {
                int r = (it + 1) * BM + e;
                bool in = r < R;
                i64 li = ((i64)place[0] * T + r / group) * heads + place[1] * group + r % group;
                Ls[(buf ^ 1) * BM + e] = in ? ld(lse, li) * LOG2E : 0.f;
                Ds[(buf ^ 1) * BM + e] = in ? Dv[li] : 0.f;
            }
        }
        cp_async_commit();
        // sᵀ = k qᵀ and dpᵀ = v doutᵀ for this warp's 16 keys × BM queries.
        float st_[BM / 8][4], dp[BM / 8][4];
UNROLL
        for (int n = 0; n < BM / 8; n++) st_[n][0] = st_[n][1] = st_[n][2] = st_[n][3] = dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.f;
UNROLL
        for (int ks = 0; ks < D / 16; ks++) {
            u32 ak[4], av[4];
            frag_a<D>(ak, Ks, kw, 2 * ks);
            frag_a<D>(av, Vs, kw, 2 * ks);
UNROLL
            for (int n2 = 0; n2 < BM / 16; n2++) {
                u32 bq[4], bo[4];
                frag_bt<D>(bq, Qc, n2 * 16, 2 * ks);
                mma_bf16_16816(st_[2 * n2], ak, bq);
                mma_bf16_16816(st_[2 * n2 + 1], ak, bq + 2);
                frag_bt<D>(bo, Oc, n2 * 16, 2 * ks);
                mma_bf16_16816(dp[2 * n2], av, bo);
                mma_bf16_16816(dp[2 * n2 + 1], av, bo + 2);
            }
        }
        // pᵀ and dsᵀ; element (key kw + g + 8h, query n*8 + 2 t4 + e).
UNROLL
        for (int n = 0; n < BM / 8; n++)
UNROLL
            for (int h = 0; h < 2; h++)
UNROLL
                for (int e = 0; e < 2; e++) {
                    int key = j0 + kw + g + 8 * h;
                    int rq = n * 8 + 2 * t4 + e;
                    int r = it * BM + rq;
                    float p = 0.f;
                    if (r < R && key < nk && key <= p0 + r / group) p = fast_exp2(st_[n][2 * h + e] * sl2 - Lc[rq]);
                    st_[n][2 * h + e] = p;
                    dp[n][2 * h + e] = p * (dp[n][2 * h + e] - Dc[rq]);
                }
        // dv += pᵀ dout and dk += dsᵀ q over the slice's columns.
UNROLL
        for (int kk = 0; kk < BM / 16; kk++) {
            u32 pa[4], sa[4];
            pa[0] = pack_bf16(st_[2 * kk][0], st_[2 * kk][1]);
            pa[1] = pack_bf16(st_[2 * kk][2], st_[2 * kk][3]);
            pa[2] = pack_bf16(st_[2 * kk + 1][0], st_[2 * kk + 1][1]);
            pa[3] = pack_bf16(st_[2 * kk + 1][2], st_[2 * kk + 1][3]);
            sa[0] = pack_bf16(dp[2 * kk][0], dp[2 * kk][1]);
            sa[1] = pack_bf16(dp[2 * kk][2], dp[2 * kk][3]);
            sa[2] = pack_bf16(dp[2 * kk + 1][0], dp[2 * kk + 1][1]);
            sa[3] = pack_bf16(dp[2 * kk + 1][2], dp[2 * kk + 1][3]);
UNROLL
            for (int d2 = 0; d2 < DS / 16; d2++) {
                u32 bo[4], bq[4];
                frag_b<D>(bo, Oc, kk * 16, c0 / 8 + 2 * d2);
                mma_bf16_16816(adv[2 * d2], pa, bo);
                mma_bf16_16816(adv[2 * d2 + 1], pa, bo + 2);
                frag_b<D>(bq, Qc, kk * 16, c0 / 8 + 2 * d2);
                mma_bf16_16816(adk[2 * d2], sa, bq);
                mma_bf16_16816(adk[2 * d2 + 1], sa, bq + 2);
            }
        }
        // Store dsᵀ (bf16) as [key][query] rows of BM.
UNROLL
        for (int n = 0; n < BM / 8; n++)
UNROLL
            for (int h = 0; h < 2; h++) {
                int key = kw + g + 8 * h;
                int rq = n * 8 + 2 * t4;
                *(u32*)(tile_at<BM>(Ss, key, rq >> 3) + (rq & 7)) = pack_bf16(dp[n][2 * h], dp[n][2 * h + 1]);
            }
        // Wait for this query tile's earlier key tiles to have added their dq.
        const int jlast = (p0 + (min(R, (it + 1) * BM) - 1) / group) / BN; // the last key tile this query tile sees
        int* cnt = sem + 1 + (((i64)place[0] * kvHeads + place[1]) * qtiles + it) * NS + cs;
        if (threadIdx.x == 0 && jt > 0) {
            while (atomicAdd(cnt, 0) != jt) {
            }
            __threadfence();
        }
        __syncthreads(); // dsᵀ complete; dqacc ready for this tile
        // dq[BM × DS] (+)= ds k: warps split the rows (16 each) and columns.
        {
            enum { WPM = W / (BM / 16), CW = DS / WPM }; // warps per m-tile, columns per warp
            const int mrow = (warp / WPM) * 16, ccol = c0 + (warp % WPM) * CW;
UNROLL
            for (int cc = 0; cc < CW; cc += 32) {
                float aq[4][4];
UNROLL
                for (int n = 0; n < 4; n++) aq[n][0] = aq[n][1] = aq[n][2] = aq[n][3] = 0.f;
UNROLL
                for (int kk = 0; kk < BN / 16; kk++) {
                    u32 a[4];
                    frag_at<BM>(a, Ss, kk * 16, mrow / 8);
UNROLL
                    for (int d2 = 0; d2 < 2; d2++) {
                        u32 bk[4];
                        frag_b<D>(bk, Ks, kk * 16, (ccol + cc) / 8 + 2 * d2);
                        mma_bf16_16816(aq[2 * d2], a, bk);
                        mma_bf16_16816(aq[2 * d2 + 1], a, bk + 2);
                    }
                }
UNROLL
                for (int h = 0; h < 2; h++) {
                    int rq = mrow + g + 8 * h;
                    int r = it * BM + rq;
                    if (r >= R) continue;
                    volatile float* acc = dqacc + ((((i64)place[0] * kvHeads + place[1]) * qtiles * BM) + r) * D;
                    i64 oo = qr.off(r);
UNROLL
                    for (int n = 0; n < 4; n++) {
                        int c = ccol + cc + n * 8 + 2 * t4;
                        float x0 = aq[n][2 * h], x1 = aq[n][2 * h + 1];
                        if (jt > 0) {
                            x0 += acc[c];
                            x1 += acc[c + 1];
                        }
                        if (jt == jlast) {
                            if (c < hd) st(dq, oo + c, x0 * scale);
                            if (c + 1 < hd) st(dq, oo + c + 1, x1 * scale);
                        } else {
                            acc[c] = x0;
                            acc[c + 1] = x1;
                        }
                    }
                }
            }
        }
        __syncthreads(); // every warp added its dq; Ss and the buffers are free
        if (threadIdx.x == 0) {
            // The block's dq stores, ordered before this thread's by the
            // barrier, become visible to the whole GPU before the counter
            // does (the pattern of cooperative groups' grid sync).
            __threadfence();
            atomicExch(cnt, jt + 1);
        }
    }
    // dk and dv of this warp's 16 keys (zero for keys no query sees).
UNROLL
    for (int h = 0; h < 2; h++) {
        int key = j0 + kw + g + 8 * h;
        if (key >= kvRows) continue;
        i64 oo = kr.off(key);
UNROLL
        for (int n = 0; n < DS / 8; n++) {
            int c = c0 + n * 8 + 2 * t4;
            if (c < hd) {
                st(dk, oo + c, adk[n][2 * h] * scale);
                st(dv, oo + c, adv[n][2 * h]);
            }
            if (c + 1 < hd) {
                st(dk, oo + c + 1, adk[n][2 * h + 1] * scale);
                st(dv, oo + c + 1, adv[n][2 * h + 1]);
            }
        }
    }
}

// The backward kernels, one per padded head dimension; shared memory
// (2 BN D + 4 BM D + BN BM) bf16 values, 4 BM floats and the ticket
// (attnShapes in backend/cuda/ops.go). d32 asks for 2 blocks per
// multiprocessor (≈ 190 registers): with a bound of 128 threads alone
// ptxas 11.8 once squeezed it into 168 for sm_90 by spilling.
extern "C" __global__ void __launch_bounds__(128, 2) attention_bwd_d32(void* dq, void* dk, void* dv, float* dqacc, int* sem, const void* dout, const void* q,
                                                                    const void* k, const void* v, const void* lse, const float* Dv, const int* past,
                                                                    const int* slots, int T, int heads, int kvHeads, int hd, int kvRows, float scale) {
    attn_bwd<32>(dq, dk, dv, dqacc, sem, dout, q, k, v, lse, Dv, past, slots, T, heads, kvHeads, hd, kvRows, scale);
}
extern "C" __global__ void __launch_bounds__(256) attention_bwd_d64(void* dq, void* dk, void* dv, float* dqacc, int* sem, const void* dout, const void* q,
                                                                    const void* k, const void* v, const void* lse, const float* Dv, const int* past,
                                                                    const int* slots, int T, int heads, int kvHeads, int hd, int kvRows, float scale) {
    attn_bwd<64>(dq, dk, dv, dqacc, sem, dout, q, k, v, lse, Dv, past, slots, T, heads, kvHeads, hd, kvRows, scale);
}
extern "C" __global__ void __launch_bounds__(256) attention_bwd_d128(void* dq, void* dk, void* dv, float* dqacc, int* sem, const void* dout, const void* q,
                                                                     const void* k, const void* v, const void* lse, const float* Dv, const int* past,
                                                                     const int* slots, int T, int heads, int kvHeads, int hd, int kvRows, float scale) {
    attn_bwd<128>(dq, dk, dv, dqacc, sem, dout, q, k, v, lse, Dv, past, slots, T, heads, kvHeads, hd, kvRows, scale);
}
extern "C" __global__ void __launch_bounds__(128) attention_bwd_d256(void* dq, void* dk, void* dv, float* dqacc, int* sem, const void* dout, const void* q,
                                                                     const void* k, const void* v, const void* lse, const float* Dv, const int* past,
                                                                     const int* slots, int T, int heads, int kvHeads, int hd, int kvRows, float scale) {
    attn_bwd<256>(dq, dk, dv, dqacc, sem, dout, q, k, v, lse, Dv, past, slots, T, heads, kvHeads, hd, kvRows, scale);
}
