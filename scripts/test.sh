#!/usr/bin/env bash
# Sets everything up, then runs the test suite.
#   scripts/test.sh            the default suite (every layer, tiny sizes; what CI runs)
#   scripts/test.sh --slow     the long experiments and loose asymptotic checks only
# Any other arguments are passed to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$PROJECT_ROOT/scripts/setup.sh"
cd "$PROJECT_ROOT"
if [ "${1:-}" = "--slow" ]; then
    shift
    exec .venv/bin/python -m pytest -m slow "$@"
fi
exec .venv/bin/python -m pytest "$@"
