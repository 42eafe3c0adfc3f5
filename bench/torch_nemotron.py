"""PyTorch eager reference for the CPU benchmarks: a Nemotron-architecture
decoder (LayerNorm1P, squared-ReLU MLP, partial RoPE, GQA) written with plain
torch ops, as transformers' eager implementation computes it, with a KV cache.

Usage: python3 bench/torch_nemotron.py decode|train|matmul [--threads 2] [--json]
Prints one line (or a JSON object) with the figure measured. Needs only torch.
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

SHAPE = dict(vocab=8192, hidden=512, layers=8, heads=8, kv_heads=2, head_dim=64, ffn=1536,
             rope_theta=10000.0, partial=0.5, eps=1e-5)


class Block(torch.nn.Module):
    def __init__(self, s):
        super().__init__()
        d, h, kv, hd, f = s["hidden"], s["heads"], s["kv_heads"], s["head_dim"], s["ffn"]
        self.ln1 = torch.nn.LayerNorm(d, eps=s["eps"])
        self.ln2 = torch.nn.LayerNorm(d, eps=s["eps"])
        self.q = torch.nn.Linear(d, h * hd, bias=False)
        self.k = torch.nn.Linear(d, kv * hd, bias=False)
        self.v = torch.nn.Linear(d, kv * hd, bias=False)
        self.o = torch.nn.Linear(h * hd, d, bias=False)
        self.up = torch.nn.Linear(d, f, bias=False)
        self.down = torch.nn.Linear(f, d, bias=False)
        self.h, self.kv, self.hd = h, kv, hd
        self.rot = int(hd * s["partial"])

    def ln1p(self, ln, x):
        return F.layer_norm(x, ln.normalized_shape, ln.weight + 1, ln.bias, ln.eps)

    def rope(self, x, cos, sin):
        r = self.rot
        xr, xp = x[..., :r], x[..., r:]
        x1, x2 = xr[..., : r // 2], xr[..., r // 2:]
        rotated = torch.cat((-x2, x1), dim=-1)
        return torch.cat((xr * cos + rotated * sin, xp), dim=-1)

    def forward(self, x, cos, sin, cache=None):
        b, t, _ = x.shape
        n = self.ln1p(self.ln1, x)
        q = self.q(n).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k(n).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v(n).view(b, t, self.kv, self.hd).transpose(1, 2)
        q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
        if cache is not None:
            if cache[0] is not None:
                k = torch.cat((cache[0], k), dim=2)
                v = torch.cat((cache[1], v), dim=2)
            cache[0], cache[1] = k, v
        rep = self.h // self.kv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = q @ k.transpose(2, 3) / math.sqrt(self.hd)
        tk = k.shape[2]
        mask = torch.ones(t, tk, dtype=torch.bool).tril(diagonal=tk - t)
        s = s.masked_fill(~mask, float("-inf"))
        a = torch.softmax(s, dim=-1) @ v
        x = x + self.o(a.transpose(1, 2).reshape(b, t, -1))
        n = self.ln1p(self.ln2, x)
        return x + self.down(torch.relu(self.up(n)) ** 2)


class Model(torch.nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s
        self.embed = torch.nn.Embedding(s["vocab"], s["hidden"])
        self.blocks = torch.nn.ModuleList(Block(s) for _ in range(s["layers"]))
        self.norm = torch.nn.LayerNorm(s["hidden"], eps=s["eps"])
        self.head = torch.nn.Linear(s["hidden"], s["vocab"], bias=False)
        rot = int(s["head_dim"] * s["partial"])
        self.inv = 1.0 / (s["rope_theta"] ** (torch.arange(0, rot, 2).float() / rot))

    def forward(self, ids, start=0, caches=None):
        t = ids.shape[1]
        pos = torch.arange(start, start + t).float()
        fr = torch.outer(pos, self.inv)
        emb = torch.cat((fr, fr), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = self.embed(ids)
        for i, blk in enumerate(self.blocks):
            x = blk(x, cos, sin, None if caches is None else caches[i])
        x = F.layer_norm(x, self.norm.normalized_shape, self.norm.weight + 1, self.norm.bias, self.norm.eps)
        return self.head(x)


def bench_decode(m, prompt=16, new=128, min_time=3.0):
    ids = torch.randint(0, m.s["vocab"], (1, prompt))
    def run():
        caches = [[None, None] for _ in m.blocks]
        with torch.inference_mode():
            logits = m(ids, 0, caches)
            tok = logits[:, -1].argmax(-1, keepdim=True)
            t0 = time.perf_counter()
            for i in range(new - 1):
                logits = m(tok, prompt + i, caches)
                tok = logits[:, -1].argmax(-1, keepdim=True)
            return time.perf_counter() - t0
    run()
    total, steps, start = 0.0, 0, time.perf_counter()
    while time.perf_counter() - start < min_time or steps == 0:
        total += run()
        steps += new - 1
    return steps / total


def bench_train(m, batch=8, seq=256, min_time=10.0):
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.1)
    ids = torch.randint(0, m.s["vocab"], (batch, seq + 1))
    def step():
        logits = m(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_time or n < 2:
        step()
        n += 1
    return n * batch * seq / (time.perf_counter() - start)


def bench_matmul(size=1024, min_time=2.0):
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_time or n < 2:
        a @ b
        n += 1
    return 2 * size ** 3 * n / (time.perf_counter() - start) / 1e9


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["decode", "train", "matmul"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.what == "matmul":
        val, unit = bench_matmul(), "GFLOP/s"
    else:
        m = Model(SHAPE)
        for prm in m.parameters():
            torch.nn.init.normal_(prm, std=0.02)
        val = bench_decode(m) if a.what == "decode" else bench_train(m)
        unit = "tokens/s"
    if a.json:
        print(json.dumps({"bench": a.what, "impl": "pytorch " + torch.__version__, "threads": a.threads, "value": val, "unit": unit}))
    else:
        print(f"pytorch {torch.__version__} {a.what}: {val:.1f} {unit} ({a.threads} threads)")


if __name__ == "__main__":
    main()
