"""The ``train`` flow: a transformer preset trained with its checkpoint schedule."""

from __future__ import annotations

from prefect import flow

from tasks.caching import patterning_home
from tasks.training import train_model


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
    return train_model(
        preset,
        data or {"source": "corpus"},
        train or {"steps": 2000},
        runs_root or str(patterning_home() / "runs"),
        threads,
    )
