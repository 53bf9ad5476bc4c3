"""Demonstration 0: patterning the toy model of superposition (Elhage et al. 2022), where
the structure a seed learns (which features get a direction of their own, as a polygon in
the hidden plane) is read off its weights exactly.

- ``model``: the model, its finite training set, batched training of many seeds at once,
  and the loss in the form the samplers take.
- ``configuration``: the configuration of trained weights (represented features, k-gon).
- ``patterning``: χ of the per-feature observables toward every training sample, the χ,
  control and naive re-weightings at a common dose, linear response, LLC per configuration.
"""
