"""No pickle is ever loaded from disk.

A crafted pickle, whose unpickling would create a marker file, is put where the project
reads files (a checkpoint's name, a ``.pt`` beside it, the token-stream cache): every
loader refuses it or ignores it, and the marker never appears. A scan of the source tree
checks that no module calls an unpickling loader at all.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from flows.cli import main
from patterning_core.data.corpus import encode_corpus, load_corpus, train_tokenizer
from patterning_core.model.checkpoints import (
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    read_config,
    read_metadata,
    save_checkpoint,
)
from patterning_core.model.training import TrainConfig, train
from patterning_core.model.transformer import TransformerConfig, init_params

ROOT = Path(__file__).resolve().parents[2]
CFG = TransformerConfig(n_layers=1, n_heads=2, d_model=8, d_head=4, n_ctx=6, d_vocab=11)
REFUSED = r"not a readable safetensors checkpoint .*never loads pickled files"


class _Payload:
    """Unpickling this runs ``os.system`` and creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "UNPICKLED"
    # The payload works: unpickling it really creates the marker (so its absence below
    # means nothing was unpickled, not that the payload was broken).
    pickle.loads(pickle.dumps(_Payload(path)))
    assert path.exists()
    path.unlink()
    return path


def evil_files(folder: Path, marker: Path) -> list[Path]:
    """The payload as plain pickles (protocols 0 and 4) and as a ``torch.save`` archive,
    under checkpoint names."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, proto in (("step_00000010.safetensors", 0), ("model.pt", 4)):
        files.append(folder / name)
        files[-1].write_bytes(pickle.dumps(_Payload(marker), protocol=proto))
    files.append(folder / "step_00000020.safetensors")
    torch.save({"params": _Payload(marker)}, files[-1])
    files.append(folder / "archive.pth")
    torch.save({"params": _Payload(marker)}, files[-1])
    return files


def test_checkpoint_loaders_refuse_pickles(tmp_path, marker):
    run = tmp_path / "run"
    for path in evil_files(run, marker):
        for load in (load_checkpoint, read_metadata, read_config):
            with pytest.raises(CheckpointError, match=REFUSED):
                load(path)
    assert [p.name for _, p in list_checkpoints(run)] == [
        "step_00000010.safetensors",
        "step_00000020.safetensors",
    ]  # .pt/.pth files are never taken for checkpoints
    assert not marker.exists()


def test_resuming_training_from_a_pickle_is_refused(tmp_path, marker):
    run = tmp_path / "run"
    save_checkpoint(checkpoint_path(run, 0), init_params(CFG), CFG, step=0, data_position=0)
    checkpoint_path(run, 5).write_bytes(pickle.dumps(_Payload(marker)))
    tokens = torch.randint(0, CFG.d_vocab, (32, CFG.n_ctx))
    with pytest.raises(CheckpointError, match=REFUSED):
        train(CFG, tokens, TrainConfig(steps=10, batch_size=4), run_dir=run, progress=False)
    assert not marker.exists()


def test_cli_refuses_a_pickled_checkpoint(tmp_path, marker, capsys, monkeypatch):
    import flows.server

    monkeypatch.setattr(flows.server, "prefect_api", lambda: pytest.fail("server started"))
    (evil,) = [p for p in evil_files(tmp_path / "run", marker) if p.name.startswith("step_0000001")]
    store = tmp_path / "chi.zarr"
    config = {
        "store": str(store),
        "workload": {"kind": "transformer", "data": {"source": "synthetic", "preset": "tiny"}},
        "checkpoints": [{"step": 10, "path": str(evil)}],
        "sampler": {"num_chains": 1, "num_draws": 2},
    }
    (tmp_path / "chi.json").write_text(json.dumps(config))
    assert main(["run", "susceptibilities", "--config", str(tmp_path / "chi.json")]) == 2
    err = capsys.readouterr().err
    assert "step_00000010.safetensors is not a readable safetensors checkpoint" in err
    assert not store.exists() and not marker.exists()


def test_a_pickle_in_the_token_cache_is_ignored_and_replaced(tmp_path, marker):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.py").write_text("def alpha(x):\n    return alpha(x) + beta\n" * 30)
    corpus = load_corpus([texts])
    tok = train_tokenizer(corpus, 300, cache_dir=tmp_path / "tok")
    stream = encode_corpus(corpus, tok, cache_dir=tmp_path / "cache")
    (cached,) = (tmp_path / "cache").glob("tokens-*.safetensors")
    cached.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.warns(UserWarning, match="ignoring unreadable token cache"):
        again = encode_corpus(corpus, tok, cache_dir=tmp_path / "cache")
    assert torch.equal(again, stream)
    assert torch.equal(encode_corpus(corpus, tok, cache_dir=tmp_path / "cache"), stream)
    assert not marker.exists()


# ----------------------------------------------------------------------------- source scan

_UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` of a Name/Attribute chain ('' for anything else)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def unpickling_calls(source: str) -> list[str]:
    """Calls in ``source`` that may unpickle data: ``pickle``-family loads, ``torch.load``
    without ``weights_only=True``, ``np.load`` with ``allow_pickle`` not False,
    ``read_pickle``, and imports of pickle loaders by name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _UNPICKLERS:
            names = [a.name for a in node.names if a.name in {"load", "loads", "Unpickler", "open"}]
            if names:
                found.append(f"line {node.lineno}: from {node.module} import {names}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, attr = name.rpartition(".")
        bad = (
            (head.split(".")[0] in _UNPICKLERS and attr in {"load", "loads", "Unpickler", "open"})
            or attr == "read_pickle"
            or (
                name in {"torch.load", "torch.serialization.load"}
                and _keyword(node, "weights_only") is not True
            )
            or (
                name in {"np.load", "numpy.load"}
                and _keyword(node, "allow_pickle") not in (None, False)
            )
        )
        if bad:
            found.append(f"line {node.lineno}: {name}(...)")
    return found


def test_the_scan_detects_unpickling_calls():
    bad = """
import pickle, torch, numpy as np, pandas as pd
pickle.load(f)
pickle.loads(b)
torch.load(p)
torch.load(p, weights_only=False)
np.load(p, allow_pickle=True)
pd.read_pickle(p)
from dill import loads
"""
    good = """
import torch, numpy as np, pickle
pickle.dumps(x)
torch.load(p, weights_only=True)
np.load(p)
np.load(p, allow_pickle=False)
"""
    assert len(unpickling_calls(bad)) == 7
    assert unpickling_calls(good) == []


def project_sources() -> list[Path]:
    """Every ``.py`` file of the project (hidden folders such as ``.venv`` pruned)."""
    files = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in {"build", "dist"}]
        files.extend(Path(folder) / n for n in names if n.endswith(".py"))
    return sorted(files)


def test_no_module_loads_pickles():
    files = project_sources()
    assert ROOT / "patterning_core" / "model" / "checkpoints.py" in files and len(files) > 30
    this = Path(__file__).resolve()  # unpickles its own in-memory payload, on purpose
    offenders = {
        str(p.relative_to(ROOT)): calls
        for p in files
        if p != this and (calls := unpickling_calls(p.read_text(encoding="utf-8")))
    }
    assert offenders == {}
