"""PyTorch anchor for the GPU benchmarks: transformers' Nemotron in bf16 with
sdpa attention, random weights at the shapes `minitron bench --shape` names.

Usage:
  python3 bench/torch_gpu.py matmul M N K          # bf16 x @ w.T, TFLOP/s
  python3 bench/torch_gpu.py attention SHAPE       # causal SDPA (flash backend) forward and backward, TFLOP/s;
                                                   # with --past N: --seq queries after N cached keys, forward only
  python3 bench/torch_gpu.py forward SHAPE         # tokens/s, no grad
  python3 bench/torch_gpu.py train SHAPE           # forward+backward (+AdamW with --adamw), tokens/s
  python3 bench/torch_gpu.py kd STUDENT TEACHER    # teacher forward + student forward/backward with KL, tokens/s
  python3 bench/torch_gpu.py decode SHAPE          # greedy generate, batch 1, new tokens/s
Options: --batch 4 --seq 1024 --past 0 --new-tokens 128 --min-time 5 --json
Prints one line, or one JSON object with --json. Needs torch and transformers.
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

SHAPES = {
    "standard": dict(vocab=8192, hidden=512, layers=8, heads=8, kv_heads=2, head_dim=64, ffn=1536),
    "standard-teacher": dict(vocab=8192, hidden=768, layers=12, heads=12, kv_heads=4, head_dim=64, ffn=2304),
    "minitron-4b": dict(vocab=256000, hidden=3072, layers=32, heads=24, kv_heads=8, head_dim=128, ffn=9216),
    "nemotron-15b": dict(vocab=256000, hidden=6144, layers=32, heads=48, kv_heads=8, head_dim=128, ffn=24576),
}


def make(shape, vocab=None):
    from transformers import NemotronConfig, NemotronForCausalLM
    s = SHAPES[shape]
    cfg = NemotronConfig(vocab_size=vocab or s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                         num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"], head_dim=s["head_dim"],
                         intermediate_size=s["ffn"], partial_rotary_factor=0.5, max_position_embeddings=4096,
                         tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device("cuda"):
        m = NemotronForCausalLM(cfg).to(torch.bfloat16)
    return m


def timed(f, min_time):
    """Mean seconds per call of f after a warm-up, over at least min_time."""
    f()
    torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while True:
        f()
        n += 1
        torch.cuda.synchronize()
        el = time.perf_counter() - start
        if el >= min_time and n >= 2:
            return el / n


def attention(s, a):
    """SDPA alone at a shape's heads: bf16 q [B, H, T, D], k and v [B, KV, past+T, D],
    causal (with --past the queries are the last T positions, so every key is
    visible: the decode case). The flash backend, as transformers' sdpa path
    uses; grouped-query attention through enable_gqa when the backend takes
    it, else with k and v expanded to every head beforehand (not timed)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    B, T, P, H, KV, D = a.batch, a.seq, a.past, s["heads"], s["kv_heads"], s["head_dim"]
    torch.manual_seed(0)
    q = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(B, KV, P + T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, KV, P + T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dout = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)
    causal = P == 0 or T > 1  # a single query after the cache sees every key
    if P and T > 1:
        raise SystemExit("attention: --past with --seq > 1 is not a single SDPA call; use --seq 1")
    gqa = "enable_gqa"

    def sdpa(q, k, v):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            if gqa == "enable_gqa":
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    try:
        sdpa(q, k, v)
    except (RuntimeError, TypeError):
        gqa = "k and v expanded"
        k = k.detach().repeat_interleave(H // KV, dim=1).requires_grad_()
        v = v.detach().repeat_interleave(H // KV, dim=1).requires_grad_()
    keys = T * P + T * (T + 1) / 2
    flops = 4 * B * H * D * keys

    def twenty(f):  # synchronize once per 20 calls, as minitron bench attention does
        def g():
            for _ in range(20):
                f()
        return g
    with torch.no_grad():
        fwd = timed(twenty(lambda: sdpa(q, k, v)), a.min_time) / 20
    r = dict(forward_ms=fwd * 1e3, forward_tflops=flops / fwd / 1e12, gqa=gqa, value=flops / fwd / 1e12, unit="TFLOP/s (forward)")
    if P:
        r["kv_gbytes_per_second"] = 2 * B * (P + T) * KV * D * 2 / fwd / 1e9
        return r
    out = sdpa(q, k, v)

    def bwd():
        torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
    b = timed(twenty(bwd), a.min_time) / 20
    r.update(backward_ms=b * 1e3, backward_tflops=2.5 * flops / b / 1e12)
    return r


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what")
    p.add_argument("args", nargs="*")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--past", type=int, default=0)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--min-time", type=float, default=5.0)
    p.add_argument("--adamw", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    res = {"bench": a.what, "device": torch.cuda.get_device_name(), "torch": torch.__version__}
    if a.what == "matmul":
        m, n, k = (int(x) for x in a.args)
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        def twenty():  # synchronize once per 20 products, as minitron bench matmul does
            for _ in range(20):
                x @ w.T
        sec = timed(twenty, a.min_time) / 20
        res.update(shape=[m, n, k], value=2 * m * n * k / sec / 1e12, unit="TFLOP/s")
    elif a.what == "attention":
        res.update(attention(SHAPES[a.args[0]], a))
        res.update(shape=a.args[0], batch=a.batch, seq=a.seq, past=a.past)
    elif a.what in ("forward", "train"):
        model = make(a.args[0])
        ids = torch.randint(0, model.config.vocab_size, (a.batch, a.seq), device="cuda")
        if a.what == "forward":
            def f():
                with torch.no_grad():
                    model(ids)
        else:
            model.gradient_checkpointing_disable()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-5) if a.adamw else None

            def f():
                out = model(ids, labels=ids)
                out.loss.backward()
                if opt:
                    opt.step()
                model.zero_grad(set_to_none=True)
        sec = timed(f, a.min_time)
        res.update(shape=a.args[0], batch=a.batch, seq=a.seq, value=a.batch * a.seq / sec, unit="tokens/s", adamw=a.adamw)
    elif a.what == "kd":
        student, teacher = make(a.args[0]), make(a.args[1])
        ids = torch.randint(0, student.config.vocab_size, (a.batch, a.seq), device="cuda")

        def tfwd():
            with torch.no_grad():
                return teacher(ids).logits

        def sstep(tl):
            sl = student(ids).logits
            loss = F.kl_div(F.log_softmax(sl.float(), -1), F.log_softmax(tl.float(), -1), log_target=True, reduction="batchmean")
            loss.backward()
            student.zero_grad(set_to_none=True)

        tsec = timed(tfwd, a.min_time)
        tl = tfwd()
        ssec = timed(lambda: sstep(tl), a.min_time)
        del tl
        res.update(teacher_forward=a.batch * a.seq / tsec, student_fwd_bwd=a.batch * a.seq / ssec,
                   estimate=a.batch * a.seq / (tsec + ssec))
        try:
            sec = timed(lambda: sstep(tfwd()), a.min_time)
            res.update(value=a.batch * a.seq / sec, measured="combined step")
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            res.update(value=res["estimate"], measured="sum of the phases (the combined step ran out of memory)")
        res.update(shape=a.args[0], teacher=a.args[1], batch=a.batch, seq=a.seq, unit="tokens/s")
    elif a.what == "decode":
        model = make(a.args[0])
        ids = torch.randint(0, model.config.vocab_size, (1, 16), device="cuda")

        def f():
            model.generate(ids, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False)
        sec = timed(f, a.min_time)
        res.update(shape=a.args[0], value=a.new_tokens / sec, unit="tokens/s (generate, prefill included)")
    else:
        raise SystemExit(f"unknown benchmark {a.what}")
    res["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if a.json:
        print(json.dumps(res))
    else:
        print(f"{a.what}: {res['value']:.1f} {res['unit']}  ({json.dumps(res)})")


if __name__ == "__main__":
    main()
