#!/usr/bin/env bash
# Creates .venv (Python 3.11) with the project and all its extras. Idempotent.
# torch is installed first by its exact pin (a CPU wheel): no CUDA packages are ever pulled.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PROJECT_ROOT"
PY="${PYTHON:-python3.11}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.patterning-installed
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q "torch==2.13.0"
    # (setuptools warns at length that an editable install is one: nothing to act on)
    PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q -e ".[all,dev]"
    echo "$want" > "$stamp"
fi
.venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
