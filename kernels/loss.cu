// Row losses over a vocabulary: cross-entropy, KL against full teacher
// logits, KL against a top-k teacher. One block per row; the normalizers
// use an online max/sum, so each row is read once for them and once more
// for the gradient. Gradients may overwrite the logits they come from.

// cross_entropy: losses[i] = logsumexp(x_i) - x_i[t_i]; dlogits (when
// given) = scale*(softmax(x_i) - onehot(t_i)). A negative target gives a
// zero loss and gradient.
extern "C" __global__ void __launch_bounds__(1024) cross_entropy(void* losses, void* dlogits, const void* logits, const int* targets, int n,
                                                                 int V, float scale, int* err) {
    int i = blockIdx.x;
    i64 row = (i64)i * V;
    int t = targets[i];
    if (t >= V) {
        if (threadIdx.x == 0) report(err, 4);
        t = -1;
    }
    if (t < 0) {
        if (threadIdx.x == 0) st(losses, i, 0.f);
        if (dlogits)
            for (int j = threadIdx.x; j < V; j += blockDim.x) st(dlogits, row + j, 0.f);
        return;
    }
    MZ a;
    a.m = NEG_INF;
    a.z = 0.f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) a = mz_add(a, ld(logits, row + j));
    float lse = block_lse(a);
    float xt = ld(logits, row + t); // read before any gradient overwrites it
    __syncthreads();
    if (threadIdx.x == 0) st(losses, i, lse - xt);
    if (!dlogits) return;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float g = expf(ld(logits, row + j) - lse);
        if (j == t) g -= 1.f;
        st(dlogits, row + j, scale * g);
    }
}

// kl_div: losses[i] = T²·KL(p‖q) with p = softmax(teacher/T), q =
// softmax(student/T), or T²·KL(q‖p) when reverse. dstudent (when given) =
// gscale·T·(q − p), or gscale·T·q·(log q − log p − KL) for reverse.
extern "C" __global__ void __launch_bounds__(1024) kl_div(void* losses, void* dstudent, const void* student, const void* teacher, int n, int V,
                                                          float T, int reverse, float gscale) {
    i64 row = (i64)blockIdx.x * V;
    float inv = 1.f / T;
    MZ a, c;
    a.m = c.m = NEG_INF;
    a.z = c.z = 0.f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        a = mz_add(a, ld(student, row + j) * inv);
        c = mz_add(c, ld(teacher, row + j) * inv);
    }
    float lseS = block_lse(a), lseT = block_lse(c);
    float kl = 0.f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float lq = ld(student, row + j) * inv - lseS, lp = ld(teacher, row + j) * inv - lseT;
        kl += reverse ? expf(lq) * (lq - lp) : expf(lp) * (lp - lq);
    }
    kl = block_sum(kl);
    if (threadIdx.x == 0) st(losses, blockIdx.x, T * T * kl);
    if (!dstudent) return;
    float g = gscale * T;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float lq = ld(student, row + j) * inv - lseS, lp = ld(teacher, row + j) * inv - lseT;
        float q = expf(lq);
        st(dstudent, row + j, reverse ? g * q * (lq - lp - kl) : g * (q - expf(lp)));
    }
}

#define TOPK_MAX 1024

// kl_topk is kl_div against a teacher known by its top K token ids and
// log-probabilities at temperature T (ids and logp are [n, K]). The mass
// outside the K tokens is dropped and the K renormalized (uniform = 0) or
// spread evenly over the other V−K tokens (uniform = 1). Block size must
// be at least 32 and K at most TOPK_MAX.
extern "C" __global__ void __launch_bounds__(1024) kl_topk(void* losses, void* dstudent, const void* student, const int* ids, const void* logp,
                                                           int n, int V, int K, float T, int reverse, int uniform, float gscale, int* err) {
    __shared__ float lqk[TOPK_MAX]; // student log q at the teacher's ids, read before dstudent overwrites them
    i64 row = (i64)blockIdx.x * V;
    i64 krow = (i64)blockIdx.x * K;
    float inv = 1.f / T;
    MZ a;
    a.m = NEG_INF;
    a.z = 0.f;
    float sumx = 0.f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float x = ld(student, row + j) * inv;
        a = mz_add(a, x);
        sumx += x;
    }
    float lse = block_lse(a);
    float sumLq = block_sum(sumx) - (float)V * lse; // Σ_j log q_j
    float sumQLq = 0.f;                             // Σ_j q_j log q_j, for reverse
    if (reverse) {
        for (int j = threadIdx.x; j < V; j += blockDim.x) {
            float lq = ld(student, row + j) * inv - lse;
            sumQLq += expf(lq) * lq;
        }
        sumQLq = block_sum(sumQLq);
    }
    float mass = 0.f, kLq = 0.f, kQ = 0.f, kQLp = 0.f;
    for (int e = threadIdx.x; e < K; e += blockDim.x) {
        int id = ids[krow + e];
        float lq = 0.f;
        if (id < 0 || id >= V) report(err, 3);
        else lq = ld(student, row + id) * inv - lse;
        lqk[e] = lq;
        float lp = ld(logp, krow + e);
        mass += expf(lp);
        kLq += lq;
        kQ += expf(lq);
        kQLp += expf(lq) * lp;
    }
    mass = block_sum(mass);
    kLq = block_sum(kLq);
    kQ = block_sum(kQ);
    kQLp = block_sum(kQLp);
    float rest = uniform ? fmaxf(0.f, 1.f - mass) / (float)(V - K) : 0.f;
    float shift = uniform ? 0.f : -logf(mass);
    float lr = logf(rest); // -inf when no mass is left
    float kl;
    if (!reverse) {
        float part = 0.f;
        for (int e = threadIdx.x; e < K; e += blockDim.x) {
            float lp = ld(logp, krow + e) + shift;
            part += expf(lp) * (lp - lqk[e]);
        }
        kl = block_sum(part);
        if (rest > 0.f) kl += rest * ((float)(V - K) * lr - (sumLq - kLq));
    } else {
        kl = sumQLq - kQLp - lr * (1.f - kQ);
    }
    if (threadIdx.x == 0) st(losses, blockIdx.x, T * T * kl);
    if (!dstudent) return;
    float g = gscale * T;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float lq = ld(student, row + j) * inv - lse;
        float q = expf(lq);
        st(dstudent, row + j, reverse ? g * q * (lq - lr - kl) : g * (q - rest));
    }
    __syncthreads(); // the K entries below overwrite values written above
    for (int e = threadIdx.x; e < K; e += blockDim.x) {
        int id = ids[krow + e];
        if (id < 0 || id >= V) continue;
        float lq = lqk[e], q = expf(lq), lp = ld(logp, krow + e);
        st(dstudent, row + id, reverse ? g * q * (lq - lp - kl) : g * (q - expf(lp + shift)));
    }
}

// cosine_loss: losses[i] = 1 − cos(u_i, v_i), cos = u·v/(max(‖u‖,1e-8)
// max(‖v‖,1e-8)); du (when given) = scale·d(loss)/du = scale·(cos·u/‖u‖² −
// v/(‖u‖‖v‖)). du may alias u.
extern "C" __global__ void __launch_bounds__(1024) cosine_loss(void* losses, void* du, const void* u, const void* v, int n, int d, float scale) {
    i64 row = (i64)blockIdx.x * d;
    float uv = 0.f, uu = 0.f, vv = 0.f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float a = ld(u, row + j), b = ld(v, row + j);
        uv += a * b;
        uu += a * a;
        vv += b * b;
    }
    uv = block_sum(uv);
    uu = block_sum(uu);
    vv = block_sum(vv);
    float nu = fmaxf(sqrtf(uu), 1e-8f), nv = fmaxf(sqrtf(vv), 1e-8f);
    float c = uv / (nu * nv);
    if (threadIdx.x == 0) st(losses, blockIdx.x, 1.f - c);
    if (!du) return;
    float a = -scale / (nu * nv), b = scale * c / (nu * nu);
    for (int j = threadIdx.x; j < d; j += blockDim.x) st(du, row + j, a * ld(v, row + j) + b * ld(u, row + j));
}
