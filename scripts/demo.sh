#!/usr/bin/env bash
# Sets everything up, then runs the main job on embedded defaults.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash "$PROJECT_ROOT/scripts/setup.sh"
cd "$PROJECT_ROOT"
exec .venv/bin/patterning demo "$@"
