"""Prefix mapper: pooled visual features ``[B, C]`` -> ``k`` embeddings ``[B, k, D]`` in the LM's input space."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class PrefixMapper(nn.Module):
    """``Linear(C, k*D)`` reshaped to ``[B, k, D]`` (the paper's mapper, k=2), or a 2-layer MLP variant.

    C and D are passed in by the caller, read off the backbone and the LM, never duplicated in config.
    """

    def __init__(
        self, in_dim: int, out_dim: int, *, num_tokens: int, kind: str = "linear", hidden_dim: int | None = None
    ):
        super().__init__()
        self.num_tokens, self.out_dim = num_tokens, out_dim
        if kind == "linear":
            self.proj = nn.Linear(in_dim, num_tokens * out_dim)
        else:
            hidden = hidden_dim or max(in_dim, out_dim)
            self.proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, num_tokens * out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # [B, C] -> [B, k*D] -> [B, k, D]
        return rearrange(self.proj(features), "b (k d) -> b k d", k=self.num_tokens)
