"""The ``decompose`` flow: modes of χ at every assembled checkpoint of a store."""

from __future__ import annotations

from prefect import flow

from flows.parameters import DecomposeParameters
from patterning_core.store.chi_store import open_chi
from tasks.decomposition import decompose_checkpoint


@flow(name="decompose")
def decompose_flow(params: DecomposeParameters) -> list:
    """Decompose χ of every checkpoint whose χ is assembled; plots and modes in
    ``params.out_dir``."""
    chi = open_chi(params.store)["chi"]
    steps = [
        int(s) for s, ok in zip(chi.checkpoint.values, chi.chi_complete.values, strict=True) if ok
    ]
    return [
        decompose_checkpoint(params.store, s, params.out_dir, params.by, params.n_modes)
        for s in steps
    ]
