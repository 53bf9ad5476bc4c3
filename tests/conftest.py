"""Test-wide settings."""

import torch

# The test models are tiny: one thread is fastest, and several threads spin-wait badly
# when the machine's other core is busy.
torch.set_num_threads(1)
