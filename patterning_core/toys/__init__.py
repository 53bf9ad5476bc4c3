"""Toy models with known answers (polynomial and linear regression, small MLPs) in the
functional form the samplers take, and the exact answers the estimators are checked
against (method.md §4, §8).

May import ``patterning_core.sampling``.
"""
