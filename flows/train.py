"""The ``train`` flow: a transformer preset trained with its checkpoint schedule."""

from __future__ import annotations

from prefect import flow

from tasks.caching import patterning_home
from tasks.training import check_training_inputs, train_model

DEFAULT_DATA = {"source": "corpus"}
DEFAULT_TRAIN = {"steps": 2000}


def check_train_parameters(
    preset: str = "demo", data: dict | None = None, train: dict | None = None, **_: object
) -> None:
    """Check the flow's parameters before anything is written (``ConfigError``)."""
    check_training_inputs(preset, data or DEFAULT_DATA, train or DEFAULT_TRAIN)


@flow(name="train")
def train_flow(
    preset: str = "demo",
    data: dict | None = None,
    train: dict | None = None,
    runs_root: str | None = None,
    threads: int = 1,
) -> dict:
    """Train ``preset`` on ``data`` (a data spec, default: the default corpus) with the
    settings ``train`` (``TrainConfig`` fields); memoized per settings and seed."""
    data = data or DEFAULT_DATA
    train = train or DEFAULT_TRAIN
    check_train_parameters(preset, data, train)
    return train_model(preset, data, train, runs_root or str(patterning_home() / "runs"), threads)
