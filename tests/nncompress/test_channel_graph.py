"""Coupled-channel analysis on the seed Net, a residual block, a depthwise block and a GRU."""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from nncompress.graph import ChannelGraph, channel_groups, trace, unsupported_ops
from nncompress.models.mnist import Net
from tests.nncompress.pruners.factories import TinyEncoder


class ResidualDepthwise(nn.Module):
    """stem -> residual block (c2 added to stem) -> depthwise -> pointwise -> concat -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c1 = nn.Conv2d(8, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.b2 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 4, 1)
        self.a = nn.Conv2d(4, 3, 1)
        self.b = nn.Conv2d(4, 5, 1)
        self.after = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        x = self.pw(self.dw(torch.relu(x + y)))
        x = self.after(torch.cat([self.a(x), self.b(x)], 1))
        return self.fc(x.mean((2, 3)))


class GruClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.rnn = nn.GRU(16, 12, batch_first=True)
        self.fc = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.emb(x))
        return self.fc(out[:, -1])


def _by_root(groups):  # type: ignore[no-untyped-def]
    return {g.roots: g for g in groups}


def test_seed_net_has_one_group_per_layer_and_fc2_feeds_the_output() -> None:
    groups = _by_root(channel_groups(Net(), torch.randn(1, 1, 28, 28)))
    assert {r: g.channels for r, g in groups.items()} == {
        ("conv1",): 20,
        ("conv2",): 50,
        ("fc1",): 500,
        ("fc2",): 10,
    }
    assert groups[("fc2",)].feeds_output and not groups[("fc2",)].prunable
    assert groups[("conv1",)].prunable
    # conv2's channels reach fc1 through the flatten: 16 input columns per channel.
    (fc1_in,) = groups[("conv2",)].consumers
    assert (fc1_in.module, fc1_in.param, fc1_in.dim) == ("fc1", "weight", 1)
    assert fc1_in.positions([0]) == list(range(16))
    assert fc1_in.positions([49]) == list(range(784, 800))
    members = {(s.module, s.param, s.dim) for s in groups[("conv1",)].members}
    assert members == {("conv1", "weight", 0), ("conv1", "bias", 0)}


def test_residual_add_couples_both_convs_with_their_norms_and_the_depthwise_conv() -> None:
    model = ResidualDepthwise()
    groups = _by_root(channel_groups(model, torch.randn(1, 3, 8, 8)))
    g = groups[("stem", "c2")]
    assert g.channels == 8 and g.prunable
    assert {(s.module, s.param) for s in g.members} == {
        (m, p) for m in ("stem", "bn", "c2", "b2", "dw") for p in ("weight", "bias")
    }
    assert {s.module for s in g.consumers} == {"c1", "pw"}
    assert g.root_slice("c2").module == "c2"
    # The depthwise conv is a member, never a root of its own.
    assert not any("dw" in r for r in groups)
    # A conv whose output is concatenated second reads the concat at an offset.
    (after_in,) = groups[("b",)].consumers
    assert after_in.index == (3, 4, 5, 6, 7) and after_in.channel == (0, 1, 2, 3, 4)
    assert groups[("fc",)].feeds_output


def test_groups_are_disjoint_and_match_torch_pruning() -> None:
    model = ResidualDepthwise()
    x = torch.randn(1, 3, 8, 8)
    dg = trace(model, x)
    groups = ChannelGraph.build(model, x).groups
    seen: set[tuple[str, str, int, int]] = set()
    for g in groups:
        for s in g.members:
            for i in s.index:
                key = (s.module, s.param, s.dim, i)
                assert key not in seen
                seen.add(key)
    # Every conv/linear output channel is covered exactly once.
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            n = m.weight.shape[0]
            assert {(name, "weight", 0, i) for i in range(n)} <= seen
    # The residual group is what Torch-Pruning itself returns for the stem.
    tp_group = dg.get_pruning_group(model.stem, tp.prune_conv_out_channels, [0, 1])
    tp_modules = {it.dep.target.module for it in tp_group.items}
    assert model.c2 in tp_modules and model.dw in tp_modules and model.b2 in tp_modules


def test_roots_filter_and_mode_is_restored() -> None:
    model = ResidualDepthwise().train()
    groups = channel_groups(model, torch.randn(1, 3, 8, 8), roots=["c2", "a"])
    assert [g.roots for g in groups] == [("stem", "c2"), ("a",)]
    assert model.training and model.bn.training


def test_gru_consumes_embedding_features_and_is_reported() -> None:
    model = GruClassifier()
    x = torch.randint(0, 50, (2, 7))
    groups = _by_root(channel_groups(model, x))
    (rnn_in,) = groups[("emb",)].consumers
    assert (rnn_in.module, rnn_in.param, rnn_in.dim) == ("rnn", "weight_ih_l0", 1)
    assert groups[("emb",)].prunable
    # its hidden units prune (read by fc alone), so it is not reported
    assert unsupported_ops(model, x) == []


def test_gru_whose_state_is_the_output_is_reported_with_the_reason() -> None:
    class StateOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.rnn = nn.GRU(16, 12, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.rnn(self.emb(x))[0]

    ops = unsupported_ops(StateOut(), torch.randint(0, 50, (2, 7)))
    assert [(o.name, o.op_type) for o in ops] == [("rnn", "GRU")]
    assert "output of the model" in ops[0].reason and "hidden units keep their size" in ops[0].reason


def test_grouped_conv_splits_its_groups_into_segments() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=2), nn.Conv2d(8, 4, 1))
    x = torch.randn(1, 3, 6, 6)
    groups = _by_root(channel_groups(model, x))
    # the grouped conv's input and output channels each go evenly from its 2 groups
    assert groups[("0",)].prunable and groups[("0",)].segments == 2
    assert groups[("1",)].prunable and groups[("1",)].segments == 2
    assert unsupported_ops(model, x) == []


def test_transformer_hidden_size_couples_embedding_attention_and_ffn() -> None:
    groups = _by_root(channel_groups(TinyEncoder(), torch.randint(0, 50, (2, 7))))
    g = groups[("emb", "enc.self_attn", "enc.linear2")]
    qkv = next(s for s in g.members if s.param == "in_proj_weight")
    assert qkv.positions([1]) == [1, 17, 33]
    assert {s.module for s in g.members} >= {"enc.norm1", "enc.norm2", "enc.self_attn.out_proj"}
    assert ("enc.linear1",) in groups


class HeadAttention(nn.Module):
    """Self-attention with q/k/v Linears and a (tokens, heads, head_dim) reshape, as the zoo writes it."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.head_dim = dim // heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.reshape(b, t, -1, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        ctx = torch.softmax(q @ k.transpose(-2, -1) / self.head_dim**0.5, dim=-1) @ v
        return self.out(ctx.transpose(1, 2).reshape(b, t, -1))


def test_head_reshape_makes_qkv_channels_go_in_whole_heads() -> None:
    groups = _by_root(channel_groups(HeadAttention(), torch.randn(2, 5, 32)))
    qkv = groups[("q", "k", "v")]
    assert qkv.channels == 32 and qkv.block == 8
    # the merge back to (tokens, channels) and the flatten of the seed Net impose no block
    assert groups[("out",)].block == 1
    assert all(g.block == 1 for g in channel_groups(Net(), torch.randn(1, 1, 28, 28)))


def test_custom_layer_with_parameters_is_reported() -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(1, 4, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gain

    model = nn.Sequential(nn.Conv2d(3, 4, 1), Scale(), nn.Conv2d(4, 2, 1))
    (op,) = unsupported_ops(model, torch.randn(1, 3, 4, 4))
    assert (op.name, op.op_type) == ("1", "Scale") and "no pruning handler" in op.reason
