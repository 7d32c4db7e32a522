"""The subject model: the seed's decoder-only Transformer, written once.

Shapes in comments: B batch, T sequence, C d_model, nh heads, hs head size, V vocab.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.config import ModelConfig
from harness.models.kv_cache import KVCache


def sinusoidal_table(max_len: int, d_model: int) -> torch.Tensor:
    """Vaswani et al. 2017: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...)."""
    pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div[: d_model // 2])
    return table


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        # Query heads per key/value head: above 1 is grouped-query attention (n_heads: multi-query).
        # grouped_query_attention sets it on a built model; a config may state n_kv_heads. Kept as a
        # ratio so that pruning heads (which cuts q and k/v rows alike) keeps the two consistent.
        self.kv_groups = cfg.n_heads // (getattr(cfg, "n_kv_heads", None) or cfg.n_heads)
        self.head_dim = cfg.head_dim
        self.impl = cfg.attention
        kv_width = self.n_kv_heads * cfg.head_dim
        # Separate projections (not one fused qkv) so that structured pruning and LoRA address each.
        self.q_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.k_proj = nn.Linear(cfg.d_model, kv_width, bias=cfg.bias)
        self.v_proj = nn.Linear(cfg.d_model, kv_width, bias=cfg.bias)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)

    @property
    def n_kv_heads(self) -> int:
        return self.n_heads // self.kv_groups

    def _split(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, heads, self.head_dim).transpose(1, 2)  # (B, heads, T, hs)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        b, t, _ = x.shape
        q = self._split(self.q_proj(x), self.n_heads)
        k, v = self._split(self.k_proj(x), self.n_kv_heads), self._split(self.v_proj(x), self.n_kv_heads)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, n_kv, T_cached, hs)
        if self.kv_groups > 1:
            k, v = k.repeat_interleave(self.kv_groups, dim=1), v.repeat_interleave(self.kv_groups, dim=1)
        if k.size(-2) != t:
            y = cached_attention(q, k, v)
        elif self.impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = explicit_attention(q, k, v)
        y = y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)  # (B, T, C)
        return self.out_proj(y)


def cached_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention of the T_q newest positions over T_k cached ones (T_k >= T_q): query i sits at key
    position T_k - T_q + i, and sees keys up to it. Slots of a static sliding-window ring hold older
    keys only, so a single decoded token (T_q = 1) attends to every slot."""
    tq, tk = q.size(-2), k.size(-2)
    mask = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(tk - tq)  # True: attend
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T / sqrt(d_k)) V with a causal mask; keeps the (B, nh, T, T) scores for backward."""
    t = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, nh, T, T)
    mask = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.masked_fill(mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (B, nh, T, hs)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)
        self.act: nn.Module = nn.ReLU() if cfg.activation == "relu" else nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN: x + attn(ln1(x)), then x + ffn(ln2(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlp = FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        # Without a cache, the call adapters wrapping `attn` (forward(x) only) were written against.
        a = self.attn(self.ln1(x)) if cache is None else self.attn(self.ln1(x), cache, layer)
        x = x + self.drop(a)
        return x + self.drop(self.mlp(self.ln2(x)))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb: nn.Embedding | None = None
        if cfg.pos_encoding == "learned":
            self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        else:
            # A buffer, not a parameter: it is not trained and carries no optimizer state.
            self.register_buffer(
                "pos_table", sinusoidal_table(cfg.max_seq_len, cfg.d_model), persistent=False
            )
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(_init_weights)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    def embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Token plus position embeddings of tokens at positions start .. start + T - 1."""
        t = idx.size(1)
        if start + t > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {start + t} exceeds max_seq_len {self.cfg.max_seq_len}")
        x = self.tok_emb(idx)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(start, start + t, device=idx.device))
        else:
            x = x + self.get_buffer("pos_table")[start : start + t].to(x.dtype)
        return self.drop(x)

    def hidden(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final hidden states (B, T, C), before the LM head: chunked losses start from here. With a
        cache, `idx` continues the cached sequence (incremental decoding) and the cache is updated."""
        if cache is None:  # the training and prefill path, unchanged by the cache's existence
            x = self.embed(idx)
            for block in self.blocks:
                x = block(x)
            return self.ln_f(x)
        x = self.embed(idx, cache.position)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        return self.lm_head(self.hidden(idx, cache))  # (B, T, V)


def _init_weights(module: nn.Module) -> None:
    # GPT-2's initialisation: N(0, 0.02) for matrices and embeddings, zero biases.
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of (B, T, V) logits against (B, T) targets, computed in fp32."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
