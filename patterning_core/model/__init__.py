"""The attention-only transformer (one readable model file), its restricted-head forward
for fast SGLD, the fused readout and compiled CPU row kernels, training with checkpoints,
and the safetensors checkpoint files.

May import ``patterning_core.sampling`` (the lane-forward protocol).
"""
