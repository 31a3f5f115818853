"""The registry is built from the pruner classes: each class owns its name and granularities."""

from __future__ import annotations

import pytest

import nncompress.pruners  # noqa: F401 - defines every pruner class the walk below finds
from nncompress.config import GRANULARITIES
from nncompress.errors import ConfigError
from nncompress.pipeline.spec import DATA_DRIVEN_PRUNERS, pruner_names
from nncompress.pruners import PRUNERS, ChannelPruner, Pruner, get_pruner
from nncompress.pruners.datadriven import DataDrivenPruner
from nncompress.pruners.registry import _REGISTERED


def _subclasses(cls: type[Pruner]) -> set[type[Pruner]]:
    found: set[type[Pruner]] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def _engine_pruners() -> set[type[Pruner]]:
    return {c for c in _subclasses(Pruner) if c.__module__.startswith("nncompress.")}


def test_each_name_is_the_class_own_and_written_once() -> None:
    assert len(PRUNERS) == len(_REGISTERED)  # two classes with one name would collapse silently
    for name, cls in PRUNERS.items():
        assert "name" in vars(cls), f"{cls.__name__} inherits its name instead of declaring it"
        assert cls.name == name and get_pruner(name) is cls
    assert pruner_names() == tuple(PRUNERS)


def test_an_engine_pruner_is_registered_exactly_when_it_declares_a_name() -> None:
    named = {c for c in _engine_pruners() if "name" in vars(c)}
    assert named == set(PRUNERS.values())
    # The abstract bases declare none, so they cannot be asked for by a job.
    assert {ChannelPruner, DataDrivenPruner} <= _engine_pruners() - named


def test_a_subclass_elsewhere_does_not_join_the_service_list() -> None:
    class Mine(ChannelPruner):
        name = "mine"

    assert "mine" not in PRUNERS
    with pytest.raises(ConfigError, match="unknown pruner 'mine'"):
        get_pruner("mine")


@pytest.mark.parametrize("name", list(PRUNERS))
def test_granularities_are_the_config_language_and_default_is_one_of_them(name: str) -> None:
    cls = PRUNERS[name]
    assert set(cls.granularities) <= set(GRANULARITIES)
    assert "default" in cls.granularities
    assert cls.default_granularity in cls.granularities and cls.default_granularity != "default"


def test_what_default_means_per_pruner() -> None:
    assert {n: c.default_granularity for n, c in PRUNERS.items()} == {
        "level": "element",
        **{n: "out_channel" for n in PRUNERS if n != "level"},
    }


def test_data_driven_pruners_are_read_from_the_classes() -> None:
    assert {n for n, c in PRUNERS.items() if c.needs_data} == DATA_DRIVEN_PRUNERS
    # What the job spec, the submit check and the CLI hard-coded before the classes said it.
    assert {"slim", "taylorfo", "apoz", "mean_activation"} == DATA_DRIVEN_PRUNERS
