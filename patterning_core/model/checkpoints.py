"""Checkpoints of the attention-only transformer: safetensors files with JSON metadata.

A checkpoint file holds the model parameters (names as in :mod:`patterning_core.model.transformer`)
and, in the safetensors metadata (``dict[str, str]``):

- ``format``: :data:`CHECKPOINT_FORMAT`;
- ``config``: the :class:`~patterning_core.model.transformer.TransformerConfig` as JSON;
- ``step``: optimizer steps taken (``0`` = the initialization);
- ``data_position``: training sequences consumed so far (``step * batch_size``);
- ``extra``: JSON of anything else the writer records (training settings, weights digest).

No pickle anywhere: files are opened with ``safetensors`` only, so a pickle (``.pt``,
``.pth``, ``.bin``) saved under a checkpoint's name is refused unread. The file content
is a deterministic function of its inputs, so :func:`checkpoint_digest` (sha256 of the
bytes) can key caches.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from patterning_core.model.transformer import TransformerConfig, check_params

CHECKPOINT_FORMAT = "patterning.checkpoint/1"
_NAME = re.compile(r"^step_(\d{8})\.safetensors$")


class CheckpointError(ValueError):
    """A file is not a readable patterning checkpoint, or not of the expected architecture.
    The message names the file, the problem and the fix."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: parameters plus metadata."""

    params: dict[str, Tensor]
    config: TransformerConfig
    step: int
    data_position: int
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def checkpoint_path(run_dir: str | os.PathLike[str], step: int) -> Path:
    """``run_dir/step_{step:08d}.safetensors``."""
    return Path(run_dir) / f"step_{step:08d}.safetensors"


def save_checkpoint(
    path: str | os.PathLike[str],
    params: Mapping[str, Tensor],
    config: TransformerConfig,
    step: int,
    data_position: int,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``params`` and metadata to ``path`` atomically (write to a temp file, rename)."""
    check_params(params, config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in params.items()}
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "step": str(int(step)),
        "data_position": str(int(data_position)),
        "extra": json.dumps(dict(extra or {}), sort_keys=True),
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(safetensors_bytes(tensors, metadata))
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(
                err.errno,
                f"disk full while writing checkpoint {path}: free disk space and run again "
                "(training resumes from the last complete checkpoint)",
            ) from err
        raise
    os.replace(tmp, path)
    return path


_DTYPES = {
    torch.float32: "F32",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.bool: "BOOL",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
}


def safetensors_bytes(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> bytes:
    """The safetensors serialization of ``tensors`` with a canonical header.

    ``safetensors.torch.save_file`` writes the metadata in hash-map order, so identical content
    can give different bytes; here the header is JSON with sorted keys and the data follow in
    name order, so equal content gives equal bytes (and equal :func:`checkpoint_digest`).
    """
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _DTYPES:
            raise ValueError(f"tensor {name} has unsupported dtype {t.dtype}")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return len(head).to_bytes(8, "little") + head + b"".join(chunks)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The raw safetensors metadata of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; list a run's checkpoints with "
            "patterning_core.model.checkpoints.list_checkpoints(run_dir)"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except SafetensorError as err:
        raise _not_safetensors(path, err) from err
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a patterning checkpoint (metadata format {meta.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r}); write checkpoints with save_checkpoint()"
        )
    return meta


def _not_safetensors(path: str | os.PathLike[str], err: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable safetensors checkpoint ({err}). patterning never loads "
        "pickled files (.pt, .pth, .bin: unpickling can run arbitrary code); the file may "
        "also be truncated. Write checkpoints with save_checkpoint(), or train again to "
        "recreate it."
    )


def read_config(path: str | os.PathLike[str]) -> TransformerConfig:
    """The architecture a checkpoint file records (reads only the file's header)."""
    return TransformerConfig.from_dict(json.loads(read_metadata(path)["config"]))


def config_mismatch(found: TransformerConfig, expected: TransformerConfig) -> list[str]:
    """Human-readable differences ``"field: found X, expected Y"`` (empty if equal)."""
    a, b = found.to_dict(), expected.to_dict()
    return [
        f"{k}: found {a.get(k)!r}, expected {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def load_checkpoint(
    path: str | os.PathLike[str], expected_config: TransformerConfig | None = None
) -> Checkpoint:
    """Load a checkpoint; with ``expected_config``, a different architecture is a
    ``CheckpointError`` (a ``ValueError``) naming every mismatched field."""
    meta = read_metadata(path)
    config = TransformerConfig.from_dict(json.loads(meta["config"]))
    if expected_config is not None:
        diff = config_mismatch(config, expected_config)
        if diff:
            raise CheckpointError(
                f"checkpoint {path} has a different architecture than expected: "
                + "; ".join(diff)
                + ". Load it with its own config (expected_config=None) or pick the matching run."
            )
    params: dict[str, Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                params[key] = f.get_tensor(key)
    except SafetensorError as err:
        raise _not_safetensors(path, err) from err
    check_params(params, config)
    return Checkpoint(
        params=params,
        config=config,
        step=int(meta["step"]),
        data_position=int(meta["data_position"]),
        extra=json.loads(meta.get("extra", "{}")),
        path=Path(path),
    )


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_digest(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of the checkpoint file's bytes."""
    return file_sha256(path)


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``[(step, path), ...]`` of the checkpoint files in ``run_dir``, sorted by step."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for p in run_dir.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def final_checkpoint(run_dir: str | os.PathLike[str]) -> tuple[int, Checkpoint]:
    """The last checkpoint of ``run_dir`` and its step (a ``ConfigError`` if there is none)."""
    from patterning_core.sampling.config import ConfigError

    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise ConfigError(f"no checkpoints in the run {run_dir}.")
    step, path = ckpts[-1]
    return step, load_checkpoint(path)
