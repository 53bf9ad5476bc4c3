"""Patterning the induction circuit (Induce / Repress) from a χ store: see
``flows/induction_patterning.py``.

    python scripts/induction_patterning.py --chi-store .patterning/pipeline/<key>/chi.zarr \
        --chi-step 2000 --reference-run .patterning/runs/demo-<key> --out reports/induction
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from flows.induction_patterning import build_parser, main_cli

if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main_cli(build_parser().parse_args()))
