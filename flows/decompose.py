"""The ``decompose`` flow: modes of χ at every assembled checkpoint of a store."""

from __future__ import annotations

from prefect import flow

from patterning_core.store.chi_store import open_chi
from tasks.decomposition import decompose_checkpoint


@flow(name="decompose")
def decompose_flow(store: str, out_dir: str, by: str = "component", n_modes: int = 8) -> list:
    """Decompose χ of every checkpoint whose χ is assembled; plots and modes in ``out_dir``."""
    chi = open_chi(store)["chi"]
    steps = [
        int(s) for s, ok in zip(chi.checkpoint.values, chi.chi_complete.values, strict=True) if ok
    ]
    return [decompose_checkpoint(store, s, out_dir, by, n_modes) for s in steps]
