"""deployments/prefect.yaml: create the work pool, deploy, and let a worker run a flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from patterning_core.store.chi_store import completed

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


def prefect(*args: str, env: dict, timeout: float = 300) -> str:
    exe = Path(sys.executable).with_name("prefect")
    done = subprocess.run(
        [str(exe), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_work_pool_deploy_and_worker_run_once(prefect_server, tmp_path):
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PROJECT_ROOT": str(ROOT),
        "PATTERNING_HOME": str(tmp_path / "home"),
    }
    prefect("work-pool", "create", "patterning-local", "--type", "process", env=env)
    out = prefect(
        "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml", env=env
    )
    assert "susceptibilities/chi" in out or "chi" in out
    listed = prefect("deployment", "ls", env=env)
    for name in ("pipeline/demo-nightly", "susceptibilities/chi", "train/train-demo"):
        assert name in listed
    store = tmp_path / "toy.zarr"
    params = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    chi = next(d for d in params["deployments"] if d["name"] == "chi")["parameters"]["params"]
    run_params = json.dumps({"params": {**chi, "store": str(store)}})
    prefect("deployment", "run", "susceptibilities/chi", "--params", run_params, env=env)
    prefect("worker", "start", "--pool", "patterning-local", "--run-once", env=env)
    state = completed(store, 0, verify=True)
    assert state["restricted"].all() and state["full"].all()
