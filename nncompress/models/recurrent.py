"""LSTM and GRU text classifiers: embedding, one recurrent layer over a long token sequence, linear head."""

from __future__ import annotations

import torch
from torch import nn


class RecurrentClassifier(nn.Module):
    """Embeds tokens, runs a single-layer recurrent net, classifies from the last hidden state.

    Args:
        cell: ``"lstm"`` or ``"gru"``.
        vocab_size: token vocabulary.
        embed_dim: embedding width (the recurrent input size).
        hidden_size: recurrent hidden units.
        num_classes: classifier outputs.
    """

    def __init__(
        self,
        cell: str = "lstm",
        vocab_size: int = 1000,
        embed_dim: int = 64,
        hidden_size: int = 128,
        num_classes: int = 4,
    ) -> None:
        super().__init__()
        rnn_types: dict[str, type[nn.LSTM] | type[nn.GRU]] = {"lstm": nn.LSTM, "gru": nn.GRU}
        if cell not in rnn_types:
            raise ValueError(f"cell must be one of {sorted(rnn_types)}, got {cell!r}")
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.rnn = rnn_types[cell](embed_dim, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(self.embed(tokens))
        return self.head(output[:, -1])


def lstm_classifier(**kwargs: object) -> RecurrentClassifier:
    """An LSTM text classifier (see :class:`RecurrentClassifier` for the keyword arguments)."""
    return RecurrentClassifier("lstm", **kwargs)  # type: ignore[arg-type]


def gru_classifier(**kwargs: object) -> RecurrentClassifier:
    """A GRU text classifier (see :class:`RecurrentClassifier` for the keyword arguments)."""
    return RecurrentClassifier("gru", **kwargs)  # type: ignore[arg-type]
