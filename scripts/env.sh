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
# Hugging Face libraries (TransformerLens models) never reach the network: models are built
# from a config and local safetensors weights.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
# glibc keeps freed buffers instead of returning them to the OS and faulting them back in
# every SGLD step (see flows/runtime.py: ALLOCATOR_ENV; Dask workers get the same values).
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-33554432}"
export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-1073741824}"
export MALLOC_TOP_PAD_="${MALLOC_TOP_PAD_:-67108864}"
