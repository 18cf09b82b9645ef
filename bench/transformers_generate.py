#!/usr/bin/env python3
"""bench/transformers_generate.py - the peer figures for bench/cuda_bench.lua (issue 7):
transformers' generate() on the same shape, same machine.

  python3 bench/transformers_generate.py [--config bench/configs/Llama-3-8B]
      [--batches 1,8,32,64,128] [--prompt 512] [--out 64] [--ttft 512,4096]

A LlamaForCausalLM built from config.json with random weights, bf16, on cuda, sdpa attention.
Per batch B: random 512-token prompts, greedy generate() with min_new_tokens = max_new_tokens =
--out (eos ignored). TTFT = generate() with max_new_tokens=1 (prefill + one token), median of --reps;
ms per output step = (time of --out tokens - TTFT) / (--out - 1), from the medians of --reps runs, so the
prefill is not counted; "best" is the same from the fastest runs. generate()'s step is bound by its host
loop and moved between runs on one machine (b64: 23 to 46 ms on an H100), so both are printed: compare
against "best" for a bar that should hold whichever run one gets.
Each case runs once untimed first (cuBLAS heuristics, allocator warm-up).
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM


def timed(fn, reps):
    """(median, min) seconds of reps runs after one untimed run"""
    fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--config", default=os.path.join(here, "configs", "Llama-3-8B"))
    ap.add_argument("--batches", default="1,8,32,64,128")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--out", type=int, default=64)
    ap.add_argument("--ttft", default="512,4096")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()

    t_start = time.perf_counter()
    with open(os.path.join(a.config, "config.json")) as f:
        cfg = LlamaConfig(**json.load(f))
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):  # random init on the GPU: minutes on the CPU for 8B parameters
        model = LlamaForCausalLM(cfg)
    model.eval()
    torch.cuda.synchronize()
    ready = time.perf_counter() - t_start
    commit = os.environ.get("LUNAR_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# bench/transformers_generate: transformers {transformers.__version__}, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name(0)}, sdpa, bf16, random init; commit {commit}")
    print(f"{'case':<12} {'tokens':>7} {'ms/step':>10} {'tokens/s':>10} {'best ms':>10} {'best tok/s':>10}")
    print(f"{'startup':<12} {0:>7} {ready * 1e3:>10.1f} {'-':>10}   (import to model on GPU, random init)", flush=True)
    V = cfg.vocab_size

    def gen(ids, n):
        with torch.inference_mode():
            return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                  min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)

    for B in [int(x) for x in a.batches.split(",")]:
        ids = torch.randint(3, V, (B, a.prompt), device="cuda")
        try:
            t1, t1_min = timed(lambda: gen(ids, 1), a.reps)
            tn, tn_min = timed(lambda: gen(ids, a.out), a.reps)
        except torch.OutOfMemoryError as e:
            print(f"decode b{B:<4} out of memory: {e}".splitlines()[0], flush=True)
            torch.cuda.empty_cache()
            continue
        step, best = (tn - t1) / (a.out - 1), (tn_min - t1_min) / (a.out - 1)
        print(f"{'decode b' + str(B):<12} {B:>7} {step * 1e3:>10.3f} {B / step:>10.1f} {best * 1e3:>10.3f} "
              f"{B / best:>10.1f}", flush=True)
    for P in [int(x) for x in a.ttft.split(",")]:
        ids = torch.randint(3, V, (1, P), device="cuda")
        t1, t1_min = timed(lambda: gen(ids, 1), a.reps)
        print(f"{'ttft p' + str(P):<12} {P:>7} {t1 * 1e3:>10.3f} {P / t1:>10.1f} {t1_min * 1e3:>10.3f} "
              f"{P / t1_min:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
