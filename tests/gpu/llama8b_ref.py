#!/usr/bin/env python3
"""tests/gpu/llama8b_ref.py — issue 7's "a dummy Llama-3-8B-shaped model's logits agree with
transformers given the same weights": builds LlamaForCausalLM from a config.json with random
weights (seeded; transformers' own init, std 0.02), saves it as bf16 safetensors for lunar to
load, and writes transformers' logits for a fixed 64-token prompt twice: with the bf16 model
and with the same weights in f32 (the bf16 values upcast exactly), so the check can hold lunar
to the error transformers itself makes in bf16.

  python3 tests/gpu/llama8b_ref.py CONFIG_DIR OUT_DIR
Writes OUT_DIR/{config.json, *.safetensors, ids.txt, ref_bf16.f32, ref_f32.f32} (raw
little-endian float32 [64][vocab]).
"""
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

cfg_dir, out = sys.argv[1], sys.argv[2]
cfg = LlamaConfig.from_pretrained(cfg_dir)
torch.manual_seed(1234)
t0 = time.time()
# Built in bf16 directly: model.to(bfloat16) would also round the rotary inv_freq buffer to
# bf16 (a different RoPE from the checkpoint's config, for every later use of that object).
torch.set_default_dtype(torch.bfloat16)
with torch.device("cuda"):
    model = LlamaForCausalLM(cfg)
torch.set_default_dtype(torch.float32)
model.save_pretrained(out, safe_serialization=True)
del model
torch.cuda.empty_cache()
print(f"llama8b_ref: built and saved in {time.time() - t0:.1f} s", flush=True)
ids = [(i * 7919 + 13) % cfg.vocab_size for i in range(64)]
with open(f"{out}/ids.txt", "w") as f:
    f.write(" ".join(map(str, ids)) + "\n")
x = torch.tensor([ids], device="cuda")
# the references as a user loads the checkpoint: from_pretrained in each dtype
for dtype, name in ((torch.bfloat16, "ref_bf16.f32"), (torch.float32, "ref_f32.f32")):
    model = LlamaForCausalLM.from_pretrained(out, dtype=dtype).to("cuda").eval()
    with torch.no_grad():
        model(x).logits[0].float().cpu().numpy().tofile(f"{out}/{name}")
    del model
    torch.cuda.empty_cache()
print("llama8b_ref: logits written", flush=True)
