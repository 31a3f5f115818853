"""Issue 14, recurrent units: pruners choose LSTM/GRU hidden units (all gates of a unit together, every layer
and direction), preflight promises the shrunk width, the speedup removes them exactly; layouts that read the
hidden state together with other features are refused by name, never with a bare IndexError."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nncompress import preflight, prune, speedup


class TextRNN(nn.Module):
    """Embedding or Linear → LSTM/GRU → Linear head, reading the output sequence or the final state."""

    def __init__(self, cell: str, *, layers: int = 1, bidirectional: bool = False, read: str = "out") -> None:
        super().__init__()
        self.tokens = cell == "gru"
        self.inp: nn.Module = nn.Embedding(50, 16) if self.tokens else nn.Linear(8, 16)
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(16, 32, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.read = read
        width = 64 if bidirectional and read != "h_last" else 32
        self.fc = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, state = self.rnn(self.inp(x))
        h = state[0] if isinstance(state, tuple) else state
        if self.read == "out":
            return self.fc(torch.relu(out[:, -1]))
        if self.read == "h_last":
            return self.fc(h[-1])
        return self.fc(torch.cat((h[-2], h[-1]), dim=1))  # both directions of the top layer


class Residual(nn.Module):
    """The LSTM output is added to its input: its units are tied to the Linear's channels."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 32)
        self.rnn = nn.LSTM(32, 32, batch_first=True)
        self.fc = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inp(x)
        return self.fc((self.rnn(y)[0] + y)[:, -1])


CASES = {
    "gru_state": dict(cell="gru", read="h_last"),
    "gru_out": dict(cell="gru"),
    "lstm": dict(cell="lstm"),
    "bilstm": dict(cell="lstm", bidirectional=True),
    "stacked_lstm": dict(cell="lstm", layers=2),
    "stacked_bigru_state": dict(cell="gru", layers=2, bidirectional=True, read="h_both"),
}
CONFIG = [
    {"sparsity_per_layer": 0.5, "op_types": ["Linear", "Embedding", "LSTM", "GRU"]},
    {"exclude": True, "op_names": ["fc"]},
]


def _inputs(model: nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if getattr(model, "tokens", False):
        return torch.randint(0, 50, (2, 7), generator=g)
    return torch.randn(2, 7, 8, generator=g)


@pytest.mark.parametrize("name", list(CASES))
def test_hidden_units_are_pruned_exactly(name: str) -> None:
    torch.manual_seed(0)
    model = TextRNN(**CASES[name]).eval()  # type: ignore[arg-type]
    x = _inputs(model)
    report = preflight(model, CONFIG, x)
    result = prune(model, CONFIG, pruner="l1norm", example_inputs=x)
    assert "rnn" in result.masks
    shrunk = speedup(model, result.masks, x)

    assert shrunk.verification is not None and shrunk.verification.passed
    assert shrunk.smaller and shrunk.params_after <= 0.8 * shrunk.params_before
    rnn = shrunk.model.rnn
    assert rnn.hidden_size == 16
    # preflight counts a recurrent layer's channels in hidden units, not in gate rows
    assert report.will_shrink
    assert (report.layer("rnn").channels, report.layer("rnn").channels_after) == (32, 16)
    with torch.no_grad():  # other batch and sequence lengths still run
        longer = torch.randint(0, 50, (3, 11)) if model.tokens else torch.randn(3, 11, 8)
        assert shrunk.model(longer).shape == (3, 3)


def test_conv_linear_config_keeps_the_gru_and_never_fails_bare() -> None:
    torch.manual_seed(0)
    model = TextRNN("gru", read="h_last").eval()
    x = _inputs(model)
    config = [
        {"sparsity_per_layer": 0.5, "op_types": ["Embedding", "Linear"]},
        {"exclude": True, "op_names": ["fc"]},
    ]
    result = prune(model, config, pruner="l1norm", example_inputs=x)
    shrunk = speedup(model, result.masks, x)
    assert shrunk.verification is not None and shrunk.verification.passed
    assert shrunk.model.rnn.hidden_size == 32 and shrunk.model.rnn.input_size == 8


def test_hidden_state_mixed_with_other_features_is_refused_by_name() -> None:
    torch.manual_seed(0)
    model, x = Residual().eval(), torch.randn(2, 5, 8)
    config = [{"sparsity_per_layer": 0.5, "op_types": ["LSTM"]}]
    report = preflight(model, config, x)
    assert not report.will_shrink
    reasons = report.blocked_by
    assert any("rnn" in b and "combined with other features" in b for b in reasons), reasons
