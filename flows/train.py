"""The ``train`` flow: a transformer preset trained with its checkpoint schedule."""

from __future__ import annotations

from prefect import flow

from flows.parameters import TrainParameters
from patterning_core.workspace import patterning_home
from tasks.training import train_model


@flow(name="train")
def train_flow(params: TrainParameters | None = None) -> dict:
    """Train ``params.preset`` on ``params.data`` (default: the corpus) with the settings
    ``params.train``; memoized per settings and seed (see :class:`TrainParameters`)."""
    p = params or TrainParameters()
    runs_root = p.runs_root or str(patterning_home() / "runs")
    return train_model(p.preset, p.data, p.train, runs_root, p.threads)
