"""A transformer encoder classifier whose attention is written out with q/k/v/out Linear layers.

Writing the attention by hand (instead of ``nn.MultiheadAttention``) exposes the head reshape to the
dependency graph, so attention heads and the FFN hidden units can be pruned like any Linear layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Multi-head self-attention.

    The head split reshapes to ``(batch, tokens, -1, head_dim)``: the number of heads is read from the
    tensor, so removing whole heads from q, k and v needs no change to the forward.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.reshape(batch, tokens, -1, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        scores = q @ k.transpose(-2, -1) / self.head_dim**0.5
        context = F.softmax(scores, dim=-1) @ v
        return self.out(context.transpose(1, 2).reshape(batch, tokens, -1))


class EncoderLayer(nn.Module):
    """Post-norm encoder layer: attention + residual + LayerNorm, FFN + residual + LayerNorm."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.fc2(F.gelu(self.fc1(x))))


class TransformerClassifier(nn.Module):
    """Token embedding + learned positions, encoder layers, mean pooling, linear head.

    Args:
        vocab_size: token vocabulary.
        max_len: longest sequence (positions).
        dim: model width (the residual stream; LayerNorm normalises over it).
        num_heads: attention heads per layer.
        ffn_dim: FFN hidden width.
        num_layers: encoder layers.
        num_classes: classifier outputs.
    """

    def __init__(
        self,
        vocab_size: int = 1000,
        max_len: int = 64,
        dim: int = 64,
        num_heads: int = 4,
        ffn_dim: int = 128,
        num_layers: int = 2,
        num_classes: int = 4,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.layers = nn.Sequential(*[EncoderLayer(dim, num_heads, ffn_dim) for _ in range(num_layers)])
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed(tokens) + self.pos(positions)
        x = self.layers(x)
        return self.head(x.mean(dim=1))
