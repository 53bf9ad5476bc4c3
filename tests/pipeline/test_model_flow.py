"""A model of one's own through the susceptibilities flow: a tiny TransformerLens model
(with MLPs, float64) from a folder of safetensors state dicts and a token file.

Tolerance: shards step one chain at a time, the direct estimate both chains together, so
the cached activations are computed on batches of other shapes and round differently; in
float64 that is ~1e-15 on losses, and χ (a covariance over a few contracting SGLD draws)
moves by ~1e-13 relative (the argument of tests/core/test_transformer_lens_adapter.py). We
assert 1e-9 relative.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("transformer_lens", reason="the optional extra 'tl' is not installed")

from prefect.testing.utilities import prefect_test_harness
from safetensors.torch import save_file

from flows.parameters import SusceptibilityParameters
from flows.susceptibilities import susceptibilities
from patterning_core.estimators.susceptibility import estimate_susceptibilities
from patterning_core.model.adapters.spec import load_adapter, select_components
from patterning_core.model.adapters.tl import load_hooked_transformer
from patterning_core.sampling.sgld import SamplerConfig
from patterning_core.store.chi_store import StoreError, open_chi

EXAMPLE = Path(__file__).parents[2] / "docs/examples/transformer_lens_susceptibilities.yaml"
CONFIG = {
    "n_layers": 2,
    "d_model": 16,
    "d_head": 8,
    "n_heads": 2,
    "n_ctx": 12,
    "d_vocab": 24,
    "d_mlp": 32,
    "act_fn": "gelu",
    "normalization_type": "LN",
    "seed": 3,
}
COMPONENTS = ["L0H0", "L0H1", "L1MLP", "unembed"]
SAMPLER = SamplerConfig(
    step_size=1e-4, n_beta=10.0, localization=100.0, num_chains=2, num_draws=4, batch_size=8
).to_dict()


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def _write_model(folder, step: int) -> None:
    model = load_hooked_transformer(CONFIG, dtype=torch.float64)
    gen = torch.Generator().manual_seed(step)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / f"step_{step:08d}.safetensors"))


def test_a_transformer_lens_model_through_the_flow(tmp_path, prefect_server):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (0, 10):
        _write_model(folder, step)
    gen = torch.Generator().manual_seed(1)
    tokens = tmp_path / "tokens.safetensors"
    save_file(
        {
            "train": torch.randint(0, 24, (32, 12), generator=gen),
            "probes": torch.randint(0, 24, (3, 12), generator=gen),
        },
        str(tokens),
    )
    model = {
        "kind": "transformer_lens",
        "config": CONFIG,
        "dtype": "float64",
        "checkpoint_dir": str(folder),
        "tokens": str(tokens),
        "probe_seqs": 2,
        "components": COMPONENTS,
    }
    store = str(tmp_path / "chi.zarr")
    # The documented example config, on this tiny model: its fields are the flow's.
    example = yaml.safe_load(EXAMPLE.read_text())
    example["model"].update(model, sgld_seqs=None)
    example.update(store=store, sampler=SAMPLER, n_workers=1)

    def run() -> dict:
        return susceptibilities(SusceptibilityParameters(**example))

    first = run()
    # (heads of block 0, L1MLP, unembed, full run) × 2 chains × 2 checkpoints
    assert first["computed"] == 16 and first["already_complete"] == 0
    ds = open_chi(store)
    assert list(ds.component.values) == COMPONENTS
    assert [int(s) for s in ds.checkpoint.values] == [0, 10]
    assert ds.sizes["unit"] == 2 * 11
    assert {"sequence", "position", "token_id"} <= set(ds.coords)

    adapter = load_adapter(
        {"kind": "transformer_lens", "config": CONFIG, "dtype": "float64"},
        folder / "step_00000010.safetensors",
    )
    gen = torch.Generator().manual_seed(1)  # the token file's data, again
    train = torch.randint(0, 24, (32, 12), generator=gen)
    probes = torch.randint(0, 24, (3, 12), generator=gen)[:2]
    direct = estimate_susceptibilities(
        adapter,
        adapter.params(),
        train,
        probes,
        select_components(adapter.components(), COMPONENTS),
        SamplerConfig.from_dict(SAMPLER),
    )
    chi = ds["chi"].sel(checkpoint=10)
    scale = float(abs(direct).max())
    assert scale > 0
    assert float(abs(chi.values - direct.values).max()) < 1e-9 * scale

    again = run()
    assert again["computed"] == 0 and again["already_complete"] == 16

    changed = folder / "step_00000010.safetensors"
    model_bytes = changed.read_bytes()
    _write_model(tmp_path, 11)  # other weights under the old step's name
    changed.write_bytes((tmp_path / "step_00000011.safetensors").read_bytes())
    assert changed.read_bytes() != model_bytes
    with pytest.raises(StoreError, match="changed since"):
        run()

    # The checkpoint restored, the token file changed: refused as well (its χ is of other data).
    changed.write_bytes(model_bytes)
    save_file(
        {"train": torch.randint(0, 24, (32, 12), generator=gen), "probes": probes},
        str(tokens),
    )
    with pytest.raises(StoreError, match=r"data file\(s\) \['tokens'\] changed"):
        run()


def _complete_shards(store: str) -> int:
    from patterning_core.store.chi_store import completed

    try:
        state = completed(store, 10)
    except Exception:  # the store is not created yet
        return 0
    return int(state["restricted"].sum() + state["full"].sum())


@pytest.mark.slow  # about 4 minutes on 2 shared cores: three flow runs, each its own cluster
def test_a_killed_transformer_lens_run_resumes(tmp_path, prefect_server):
    """SIGKILL the flow's process group mid-run: the rerun computes only the missing shards
    and χ equals an uninterrupted run's, bit for bit (as for the built-in model)."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from prefect.settings import PREFECT_API_URL

    _write_model(tmp_path, 10)
    gen = torch.Generator().manual_seed(1)
    tokens = tmp_path / "tokens.safetensors"
    train = torch.randint(0, 24, (32, 12), generator=gen)
    probes = torch.randint(0, 24, (3, 12), generator=gen)
    save_file({"train": train, "probes": probes}, str(tokens))
    sampler = SamplerConfig.from_dict(SAMPLER).replace(num_chains=4, num_draws=150).to_dict()
    model = {
        "kind": "transformer_lens",
        "config": CONFIG,
        "dtype": "float64",
        "checkpoint_files": [str(tmp_path / "step_00000010.safetensors")],
        "tokens": str(tokens),
        "components": ["L0H0", "L1MLP", "unembed"],  # one component per shard: counted below
    }
    total = 4 * 4  # (L0H0, L1MLP, unembed, full run) × 4 chains

    def params(store: str) -> dict:
        return {"store": store, "sampler": sampler, "model": model, "n_workers": 2}

    store = str(tmp_path / "killed.zarr")
    code = (
        "import json, sys; from flows.susceptibilities import susceptibilities;"
        "from flows.parameters import SusceptibilityParameters as P;"
        "susceptibilities(P(**json.loads(sys.argv[1])))"
    )
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(params(store))],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while _complete_shards(store) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)  # let the killed workers' last writes (if any) settle
    done_before = _complete_shards(store)
    assert 2 <= done_before < total, "the kill must land mid-run for this test to mean much"

    resumed = susceptibilities(SusceptibilityParameters(**params(store)))
    assert resumed["computed"] == total - done_before
    assert resumed["already_complete"] == done_before
    reference = str(tmp_path / "uninterrupted.zarr")
    whole = susceptibilities(SusceptibilityParameters(**params(reference)))
    assert whole["computed"] == total
    assert bool((open_chi(store)["chi"] == open_chi(reference)["chi"]).all())


def test_a_module_model_through_the_pipeline(tmp_path, prefect_server):
    """``pipeline`` with a ``module`` model given by import strings: no training, χ of its
    components at the chosen one of its checkpoints, modes and the report; a rerun finds
    every shard; a changed checkpoint file is refused."""
    from flows.parameters import PipelineParameters
    from flows.pipeline import pipeline
    from tests.module_models import build_classifier

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (0, 5):
        net = build_classifier(seed=step)
        save_file(
            {k: v.contiguous() for k, v in net.state_dict().items()},
            str(folder / f"step_{step}.safetensors"),
        )
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 3, generator=gen), torch.randint(0, 4, (48,), generator=gen)
    data = tmp_path / "data.safetensors"
    save_file(
        {"train.0": x, "train.1": y, "probes.0": x[:6].clone(), "probes.1": y[:6].clone()},
        str(data),
    )
    params = {
        "model": {
            "kind": "module",
            "factory": "tests.module_models:build_classifier",
            "loss": "tests.module_models:unit_loss",
            "config": {"hidden": 8},
            "components": {"hidden": ["0.*"], "readout": ["2.weight", "2.bias"]},
            "checkpoint_dir": str(folder),
            "data_file": str(data),
            "probe_seqs": 4,
        },
        "sampler": SAMPLER,
        "chi_checkpoints": [5],
        "out_dir": str(tmp_path / "out"),
        "n_workers": 1,
    }
    first = pipeline(PipelineParameters(**params))
    # (hidden, readout, full run) × 2 chains at the one checkpoint chosen
    assert first["computed_shards"] == 6 and first["induction"] is None
    ds = open_chi(first["store"])
    assert list(ds.component.values) == ["hidden", "readout"]
    assert [int(s) for s in ds.checkpoint.values] == [5]
    assert list(ds.example.values) == [0, 1, 2, 3]
    assert bool(np.isfinite(ds["chi"].values).all())
    report = (tmp_path / "out" / "report.md").read_text()
    assert "### Checkpoint 5" in report and "## Training" not in report
    again = pipeline(PipelineParameters(**params))
    assert again["computed_shards"] == 0 and again["already_complete"] == 6
    changed = build_classifier(seed=9).state_dict()
    save_file({k: v.contiguous() for k, v in changed.items()}, str(folder / "step_5.safetensors"))
    with pytest.raises(StoreError, match=r"steps \[5\] changed since"):
        pipeline(PipelineParameters(**params))
