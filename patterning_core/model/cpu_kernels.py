"""Fused float32 cross-entropy kernels in C, compiled at first use, with a torch fallback.

The readout (unembedding + per-token cross-entropy) is the largest part of an SGLD step of a
small transformer, and much of it is elementwise passes over ``[rows × V]`` logits
(exponentials, row maxima and sums) that eager PyTorch makes one memory pass each.
``cpu_kernels.c`` does each row's passes in one L1-resident buffer:

- ``lse_rows`` / ``softmax_grad_rows``: log-sum-exp and cross-entropy of given logits, and
  the in-place softmax gradient (used by ``fused_loss.linear_cross_entropy``);
- ``lowrank_loss_forward`` / ``lowrank_loss_backward``: cross-entropy of logits
  ``s·(A + Z·C + Z2·C2) + c0``, a cached matrix plus a low-rank update, never materialized
  (used by ``lowrank_readout``).

The C file is compiled once per process with the system's C compiler (``$CC``, ``cc`` or
``gcc``; ``-O3 -march=native``, about 0.3 s) into a temporary folder and loaded with
``ctypes``, whose calls release the GIL. Nothing depends on it: without a working compiler,
or with ``PATTERNING_CPU_KERNELS=0`` in the environment, ``kernels()`` is None and callers
run the same arithmetic in plain torch (slower; a compile failure warns once). The kernels
take contiguous float32 CPU tensors; float64 and GPU tensors always take the torch path.
``benchmarks/custom_kernels.py`` measures both paths.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["ENV_SWITCH", "for_each", "for_tensors", "kernels", "ptr"]

SOURCE = Path(__file__).with_name("cpu_kernels.c")
FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fPIC", "-shared"]
ENV_SWITCH = "PATTERNING_CPU_KERNELS"

_P, _I = ctypes.c_void_p, ctypes.c_int64
_LOWRANK = [_P, _P, _P, _I, _P, _P, _I, _P, _P, _P]  # A, Z, C, K, Z2, C2, K2, s, c0, target
_SIGNATURES = {
    "lse_rows": ([_P, _P, _I, _I, _P, _P], None),
    "softmax_grad_rows": ([_P, _P, _P, _P, _I, _I], None),
    "lowrank_loss_forward": ([*_LOWRANK, _I, _I, _P, _P], ctypes.c_int),
    "lowrank_loss_backward": ([*_LOWRANK, _P, _P, _I, _I, _P, _P, _P], ctypes.c_int),
}


def _compile() -> ctypes.CDLL | None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    problem = None
    if compiler is None:
        problem = "no C compiler found (set CC, or install gcc)"
    else:
        with tempfile.TemporaryDirectory(prefix="patterning-kernels-") as tmp:
            library = Path(tmp) / "cpu_kernels.so"
            try:
                done = subprocess.run(
                    [compiler, *FLAGS, str(SOURCE), "-o", str(library), "-lm"],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=120,
                )
                if done.returncode == 0:
                    lib = ctypes.CDLL(str(library))  # loaded: the file may go with the folder
                else:
                    problem = f"{compiler} failed: {done.stderr.strip()[:500]}"
            except (OSError, subprocess.TimeoutExpired) as err:
                problem = f"{compiler} could not run: {err}"
    if problem is not None:
        warnings.warn(
            f"patterning: the fused CPU kernels are not available ({problem}); the readout "
            f"runs in plain torch (same results, slower). Set {ENV_SWITCH}=0 to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    for name, (argtypes, restype) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype
    return lib


@functools.cache
def kernels() -> ctypes.CDLL | None:
    """This process's compiled kernels, or None (switched off, or no working compiler)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    return _compile()


def for_tensors(*tensors: Tensor) -> ctypes.CDLL | None:
    """The kernels if they are on and these tensors suit them (on the CPU, each float32 or
    int64 indices, at least one float32), else None: the caller takes the torch path."""
    fits = all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.int64) for t in tensors)
    if not fits or not any(t.dtype == torch.float32 for t in tensors):
        return None
    return kernels()


def ptr(t: Tensor) -> ctypes.c_void_p:
    """Address of a contiguous tensor's first element, for a kernel argument."""
    if not t.is_contiguous():
        raise ValueError("the fused kernels take contiguous tensors; call .contiguous() first")
    return ctypes.c_void_p(t.data_ptr())


@functools.cache
def _pool(threads: int, pid: int) -> ThreadPoolExecutor:
    """One pool per process (keyed by pid: a forked child gets its own, not the parent's
    threads, which do not exist in it)."""
    return ThreadPoolExecutor(threads, thread_name_prefix="patterning-kernels")


def for_each(fn: Callable[[int], None], count: int) -> None:
    """``fn(i)`` for i in range(count), spread over torch's intra-op threads (the kernels
    release the GIL); in order on one thread (the pipeline's workers) with no pool."""
    threads = min(torch.get_num_threads(), count)
    if threads <= 1:
        for i in range(count):
            fn(i)
        return
    for _ in _pool(threads, os.getpid()).map(fn, range(count)):
        pass
