"""Test-wide settings."""

import os
import tempfile

import torch

# The test models are tiny: one thread is fastest, and several threads spin-wait badly
# when the machine's other core is busy.
torch.set_num_threads(1)

# Tests never touch the project's own working area (runs, caches, Prefect state). Set
# before any test module imports `tasks`, whose cache locations are read at import time.
os.environ["PATTERNING_HOME"] = tempfile.mkdtemp(prefix="patterning-tests-")

# On a busy machine (CI's cores shared) the test server answers slowly: give the Prefect
# client more time and more retries before a flow test fails on a timeout.
os.environ.setdefault("PREFECT_API_REQUEST_TIMEOUT", "180")
os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "10")
