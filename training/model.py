"""A small GPT-style decoder whose attention never crosses a document boundary.

Attention is causal *and* block-diagonal over the documents of a packed row (``segment_ids`` from
the collator): token i may attend to token j iff ``j <= i`` and both are in the same document.
Two implementations of the same mask:
  * ``"sdpa"``: ``scaled_dot_product_attention`` with a boolean ``[B, 1, T, T]`` mask (any
    device; what CPU runs use);
  * ``"flex"``: ``flex_attention`` with a block mask built from ``segment_ids`` (CUDA; skips
    fully masked blocks, so its cost follows the documents' lengths, not T²).
``"auto"`` picks flex on CUDA when it is importable and SDPA otherwise.
Positions: RoPE driven by ``position_ids`` (reset per document or not, as the collator says) or
learned absolute embeddings.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.config import ModelConfig


def document_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """``[B, T, T]`` bool: query i may attend to key j (same segment and j <= i)."""
    T = segment_ids.shape[1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=segment_ids.device).tril()
    return same & causal


def _flex_block_mask(segment_ids: torch.Tensor):
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q, kv):
        return (segment_ids[b, q] == segment_ids[b, kv]) & (kv <= q)

    B, T = segment_ids.shape
    return create_block_mask(mask_mod, B, None, T, T, device=segment_ids.device)


def flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:  # pragma: no cover
        return False
    return True


class Rotary(nn.Module):
    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """x: [B, H, T, D]; rotate pairs (even, odd halves) by the angle of each position."""
        cos = self.cos[position_ids].unsqueeze(1).to(x.dtype)
        sin = self.sin[position_ids].unsqueeze(1).to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: Rotary | None):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.rotary = rotary
        self.dropout = cfg.dropout

    def forward(self, x, position_ids, mask, block_mask):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        if self.rotary is not None:
            q, k = self.rotary(q, position_ids), self.rotary(k, position_ids)
        if block_mask is not None:
            from torch.nn.attention.flex_attention import flex_attention

            y = flex_attention(q, k, v, block_mask=block_mask)
        else:
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: Rotary | None):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg, rotary)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        hidden = cfg.mlp_ratio * cfg.d_model
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, hidden), nn.GELU(), nn.Linear(hidden, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, position_ids, mask, block_mask):
        x = x + self.drop(self.attn(self.ln1(x), position_ids, mask, block_mask))
        return x + self.drop(self.mlp(self.ln2(x)))


class GPT(nn.Module):
    """``forward(input_ids, position_ids, segment_ids) -> logits [B, T, vocab]`` (head tied)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size < 2:
            raise ValueError("ModelConfig.vocab_size must be resolved (>= 2) before building the model")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        head_dim = cfg.d_model // cfg.n_heads
        rotary = Rotary(head_dim, cfg.seq_len) if cfg.positions == "rope" else None
        self.pos = nn.Embedding(cfg.seq_len, cfg.d_model) if cfg.positions == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg, rotary) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def use_flex(self, device: torch.device) -> bool:
        mode = self.cfg.attention
        return mode == "flex" or (mode == "auto" and device.type == "cuda" and flex_available())

    def forward(self, input_ids, position_ids=None, segment_ids=None):
        B, T = input_ids.shape
        if T > self.cfg.seq_len:
            raise ValueError(f"row of {T} tokens exceeds model.seq_len={self.cfg.seq_len}")
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        if segment_ids is None:
            segment_ids = torch.zeros(B, T, dtype=torch.long, device=input_ids.device)
        position_ids = position_ids.clamp(max=self.cfg.seq_len - 1)  # padding may run past
        mask = block_mask = None
        if self.use_flex(input_ids.device):
            block_mask = _flex_block_mask(segment_ids)
        else:
            mask = document_mask(segment_ids).unsqueeze(1)
        x = self.embed(input_ids)
        if self.pos is not None:
            x = x + self.pos(position_ids)
        for block in self.blocks:
            x = block(x, position_ids, mask, block_mask)
        return F.linear(self.ln_f(x), self.embed.weight)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
