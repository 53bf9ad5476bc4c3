# Environment for every project command: offline, loopback-only, state inside the project.
# Sourced by scripts/setup.sh, scripts/test.sh and scripts/demo.sh.
PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PROJECT_ROOT
export DO_NOT_TRACK=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_HOME="${PREFECT_HOME:-$PROJECT_ROOT/.patterning/prefect}"
export PATTERNING_HOME="${PATTERNING_HOME:-$PROJECT_ROOT/.patterning}"
mkdir -p "$PREFECT_HOME" "$PATTERNING_HOME"
export MPLBACKEND=Agg
export PIP_DISABLE_PIP_VERSION_CHECK=1
