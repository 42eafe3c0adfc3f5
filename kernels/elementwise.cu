// Elementwise and row-copy kernels. All use grid-stride loops over n
// elements, so any grid size is correct.

extern "C" __global__ void __launch_bounds__(256) fill(void* x, i64 n, float v) {
    GRID_STRIDE(i, n) st(x, i, v);
}

// convert copies between float storages (and within one).
extern "C" __global__ void __launch_bounds__(256) convert(void* dst, const void* src, i64 n) {
    GRID_STRIDE(i, n) st(dst, i, ld(src, i));
}

extern "C" __global__ void __launch_bounds__(256) add(void* out, const void* a, const void* b, i64 n) {
    GRID_STRIDE(i, n) st(out, i, ld(a, i) + ld(b, i));
}

extern "C" __global__ void __launch_bounds__(256) scale(void* x, i64 n, float alpha) {
    GRID_STRIDE(i, n) st(x, i, ld(x, i) * alpha);
}

extern "C" __global__ void __launch_bounds__(256) relu2(void* out, const void* x, i64 n) {
    GRID_STRIDE(i, n) {
        float v = fmaxf(ld(x, i), 0.f);
        st(out, i, v * v);
    }
}

extern "C" __global__ void __launch_bounds__(256) relu2_backward(void* dx, const void* dout, const void* x, i64 n) {
    GRID_STRIDE(i, n) st(dx, i, ld(dout, i) * 2.f * fmaxf(ld(x, i), 0.f));
}

// swiglu: out = silu(gate) * up.
extern "C" __global__ void __launch_bounds__(256) swiglu(void* out, const void* gate, const void* up, i64 n) {
    GRID_STRIDE(i, n) {
        float g = ld(gate, i);
        st(out, i, g / (1.f + expf(-g)) * ld(up, i));
    }
}

extern "C" __global__ void __launch_bounds__(256) swiglu_backward(void* dgate, void* dup, const void* dout, const void* gate, const void* up, i64 n) {
    GRID_STRIDE(i, n) {
        float g = ld(gate, i), u = ld(up, i), d = ld(dout, i);
        float s = 1.f / (1.f + expf(-g));
        st(dgate, i, d * u * s * (1.f + g * (1.f - s)));
        st(dup, i, d * g * s);
    }
}

// sqnorm writes the sum of the squares of the elements of x that block b
// visits into part[b], in double precision. The block reduces in a fixed
// tree (no atomics), so the sums are the same on every run; blockDim.x
// must be 256.
// tree_sum256 returns the sum of s over a block of 256 threads to thread
// 0, added in a fixed tree.
__device__ double tree_sum256(double s) {
    __shared__ double sh[256];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int o = blockDim.x >> 1; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
        __syncthreads();
    }
    return sh[0];
}

extern "C" __global__ void __launch_bounds__(256) sqnorm(const void* x, i64 n, double* part) {
    double s = 0;
    GRID_STRIDE(i, n) {
        double v = ld(x, i);
        s += v * v;
    }
    s = tree_sum256(s);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// sum_f64 adds x[0..n) into *out in a fixed order: one block of 256
// threads, each summing a strided slice, then a fixed tree.
extern "C" __global__ void __launch_bounds__(256) sum_f64(const double* x, int n, double* out) {
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
    s = tree_sum256(s);
    if (threadIdx.x == 0) *out = s;
}

// adamw is PyTorch's AdamW: decoupled decay, then the moment update and
// the bias-corrected step. bfloat16 weights and moments are stored with
// stochastic rounding, so steps far below one bf16 ulp still move them on
// average; seed (mixed on the host from the step and the tensor's id)
// makes the noise differ between steps and between tensors; element i's
// noise is drawn for its index off + i in the whole tensor, so a tensor
// updated in parts (views of data-parallel shards) gets the noise it gets
// updated whole. float32
// tensors (master weights, float32 moments) are stored exactly.
extern "C" __global__ void __launch_bounds__(256) adamw(void* w, const void* g, void* m, void* v, i64 n, i64 off,
                                                        float lr, float beta1, float beta2, float eps, float wd,
                                                        float bc1, float sqrt_bc2, float gscale, u32 seed) {
    GRID_STRIDE(i, n) {
        float gi = ld(g, i) * gscale;
        float mi = beta1 * ld(m, i) + (1.f - beta1) * gi;
        float vi = beta2 * ld(v, i) + (1.f - beta2) * gi * gi;
        float wi = ld(w, i) * (1.f - lr * wd);
        wi -= lr / bc1 * mi / (sqrtf(vi) / sqrt_bc2 + eps);
        u32 r = hash32(seed, (u64)(off + i));
        st_sr(w, i, wi, r);
        st_sr(m, i, mi, r >> 16 | r << 16);
        st_sr(v, i, vi, hash32(seed ^ 0x9e3779b9u, (u64)(off + i)));
    }
}

// gather_rows: dst[i] = src[rows[i]] for n rows of d.
extern "C" __global__ void __launch_bounds__(1024) gather_rows(void* dst, const void* src, const int* rows, int n, int d, int srcRows, int* err) {
    int i = blockIdx.x;
    int r = rows[i];
    if (r < 0 || r >= srcRows) {
        if (threadIdx.x == 0) report(err, 2);
        return;
    }
    for (int j = threadIdx.x; j < d; j += blockDim.x) st(dst, (i64)i * d + j, ld(src, (i64)r * d + j));
}

// scatter_rows: dst[rows[i]] = src[i].
extern "C" __global__ void __launch_bounds__(1024) scatter_rows(void* dst, const void* src, const int* rows, int n, int d, int dstRows, int* err) {
    int i = blockIdx.x;
    int r = rows[i];
    if (r < 0 || r >= dstRows) {
        if (threadIdx.x == 0) report(err, 2);
        return;
    }
    for (int j = threadIdx.x; j < d; j += blockDim.x) st(dst, (i64)r * d + j, ld(src, (i64)i * d + j));
}

// embedding: out[i] = table[ids[i]].
extern "C" __global__ void __launch_bounds__(1024) embedding(void* out, const void* table, const int* ids, int n, int d, int vocab, int* err) {
    int i = blockIdx.x;
    int id = ids[i];
    if (id < 0 || id >= vocab) {
        if (threadIdx.x == 0) report(err, 1);
        for (int j = threadIdx.x; j < d; j += blockDim.x) st(out, (i64)i * d + j, 0.f);
        return;
    }
    for (int j = threadIdx.x; j < d; j += blockDim.x) st(out, (i64)i * d + j, ld(table, (i64)id * d + j));
}

// embedding_backward adds, for each segment s of rows sharing one id,
// the float32 sum of dout over those rows to dtable[id] once: order lists
// the rows grouped by id, starts[s]..starts[s+1] delimits segment s. No
// two blocks touch the same row of dtable, so no atomics are needed and
// bfloat16 tables are rounded once per step, not once per occurrence.
extern "C" __global__ void __launch_bounds__(1024) embedding_backward(void* dtable, const void* dout, const int* ids, const int* order, const int* starts, int d) {
    int s = blockIdx.x;
    int a = starts[s], b = starts[s + 1];
    int id = ids[order[a]];
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float acc = 0.f;
        for (int r = a; r < b; r++) acc += ld(dout, (i64)order[r] * d + j);
        i64 o = (i64)id * d + j;
        st(dtable, o, ld(dtable, o) + acc);
    }
}
