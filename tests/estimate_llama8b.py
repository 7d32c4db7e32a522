"""Estimate Llama-3.1-8B full fine-tuning and LoRA (bf16 AdamW, batch 1 x 4096, checkpointing) in this
process and print one JSON line: the figures, the analytic values and the process's VmHWM.

Run as a script by tests/test_estimate.py so VmHWM is the estimate's alone. The model is transformers'
LlamaForCausalLM built from Llama-3.1-8B's published config numbers (no weights: fake tensors).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from harness.estimate.fake import fake_step_breakdown
from harness.workloads.base import Session

LLAMA_31_8B: dict[str, Any] = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    tie_word_embeddings=False,
)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA_RANK = 16


class LlamaTrain(Session):
    def __init__(self, lora: bool) -> None:
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(**LLAMA_31_8B)
        cfg._attn_implementation = "sdpa"
        model: Any = LlamaForCausalLM(cfg).to(torch.bfloat16)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=LORA_RANK, target_modules=list(LORA_TARGETS)))
        model.train()
        self.model = model
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=1e-4, foreach=False)
        x = torch.randint(0, cfg.vocab_size, (1, 4096))
        self.batches = [(x, x)] * 2
        self.samples_per_step, self.tokens_per_step = 1, 4096

    def step(self, i: int) -> float:
        x, y = self.batches[i]
        loss = self.model(input_ids=x, labels=y).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


def analytic() -> dict[str, int]:
    """Parameter counts from the config numbers alone."""
    c = LLAMA_31_8B
    d, f, v, n = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
    kv = d // c["num_attention_heads"] * c["num_key_value_heads"]
    layer = d * d * 2 + d * kv * 2 + 3 * d * f + 2 * d  # q, o; k, v; gate, up, down; two RMSNorms
    params = 2 * v * d + n * layer + d  # embedding, untied head, final norm
    lora = n * LORA_RANK * ((d + d) * 2 + (d + kv) * 2)  # A: r x in, B: out x r, for q, o, k, v
    return {"params": params, "param_tensors": 2 + n * 9 + 1, "lora_params": lora, "lora_tensors": n * 4 * 2}


def main() -> None:
    out: dict[str, Any] = {"analytic": analytic()}
    for name in sys.argv[1:]:
        t0, c0 = time.monotonic(), time.process_time()
        out[name] = fake_step_breakdown(lambda: LlamaTrain(lora=name == "lora"), 1)  # noqa: B023
        # CPU seconds as well as wall: on a loaded shared machine the wall time is mostly waiting.
        out[name]["wall_s"], out[name]["cpu_s"] = time.monotonic() - t0, time.process_time() - c0
    status = Path("/proc/self/status").read_text()
    out["vmhwm_bytes"] = int(status.split("VmHWM:")[1].split()[0]) * 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
