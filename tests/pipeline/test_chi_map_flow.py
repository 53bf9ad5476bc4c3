"""The ``chi-map`` flow on a tiny store: the map in the store, the page, the artifact, and a
rerun that finds every checkpoint's readout done."""

from __future__ import annotations

import numpy as np
import pytest
from prefect.testing.utilities import prefect_test_harness
from pydantic import ValidationError

from flows.chi_map import chi_map
from flows.parameters import ChiMapParameters
from patterning_core.store.chi_map import open_chi_map
from patterning_core.store.chi_store import create_store, write_chi


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def tiny_store(path):
    rng = np.random.default_rng(0)
    comps = ["L0H0", "L0H1", "L1H0", "L1H1", "embed"]
    create_store(
        path,
        checkpoints=[10, 20],
        components=comps,
        num_chains=1,
        num_draws=2,
        unit_coords={"position": np.arange(24) % 6, "pattern_class": np.array(["a", "b"] * 12)},
        attrs={"store_id": "flow-test"},
    )
    for step in (10, 20):
        write_chi(path, step, rng.normal(size=(len(comps), 24)))
    return path


def test_flow_maps_the_store_and_a_rerun_reuses_the_readouts(harness, tmp_path):
    from prefect.client.orchestration import get_client

    store = tiny_store(tmp_path / "chi.zarr")
    params = ChiMapParameters(
        store=str(store),
        out_dir=str(tmp_path / "page"),
        n_modes=3,
        umap=False,
        color_by=["position"],
    )
    first = chi_map(params)
    assert first["computed"] == 2 and first["checkpoints"] == [10, 20]
    assert (tmp_path / "page" / "index.md").exists()
    assert open_chi_map(store).sizes["checkpoint"] == 2
    again = chi_map(params)
    assert again["computed"] == 0

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    import asyncio

    keys = {a.key for a in asyncio.run(artifacts())}
    assert "chi-map" in keys


def test_parameters_name_what_is_wrong(tmp_path):
    store = tiny_store(tmp_path / "chi.zarr")
    with pytest.raises(ValidationError, match="no unit coordinate"):
        ChiMapParameters(store=str(store), out_dir=str(tmp_path), color_by=["token_text"])
    with pytest.raises(ValidationError, match="not assembled at"):
        ChiMapParameters(store=str(store), out_dir=str(tmp_path), checkpoints=[30])
    with pytest.raises(ValidationError, match="no χ store"):
        ChiMapParameters(store=str(tmp_path / "missing.zarr"), out_dir=str(tmp_path))
