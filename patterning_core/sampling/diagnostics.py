"""Convergence diagnostics for SGLD traces."""

from __future__ import annotations

import numpy as np


def split_rhat(trace: np.ndarray) -> float:
    """Split-R̂ (Gelman et al., BDA3 §11.4) of a ``[chain, draw]`` trace.

    Each chain is cut into halves, so one chain is enough for a value; ≈ 1 means the
    halves agree. Returns NaN with fewer than 4 draws or when every draw is identical.
    """
    trace = np.asarray(trace, dtype=np.float64)
    if trace.ndim != 2:
        raise ValueError(f"trace must be [chain, draw], got shape {trace.shape}.")
    half = trace.shape[1] // 2
    if half < 2:
        return float("nan")
    halves = np.concatenate([trace[:, :half], trace[:, -half:]], axis=0)
    within = halves.var(axis=1, ddof=1).mean()
    between = half * halves.mean(axis=1).var(ddof=1)
    if within == 0:
        return float("nan")
    var_plus = (half - 1) / half * within + between / half
    return float(np.sqrt(var_plus / within))


def integrated_autocorrelation_time(trace: np.ndarray, window_factor: float = 5.0) -> float:
    """Integrated autocorrelation time τ of a ``[chain, draw]`` (or ``[draw]``) trace, in
    draws: τ = 1 + 2 Σ_{k≥1} ρ_k, the factor by which correlated draws count less than
    independent ones (effective draws = draws / τ).

    ρ_k is the autocorrelation averaged over chains (each chain centred on its own mean);
    the sum stops at Sokal's self-consistent window, the first M with M ≥ ``window_factor``·τ(M)
    (Sokal 1997, "Monte Carlo methods in statistical mechanics", §3). For an AR(1) chain
    x_t = a·x_{t−1} + noise, τ = (1 + a)/(1 − a). Short traces can give τ < 1 (even < 0)
    by chance. Returns NaN with fewer than 4 draws per chain or a constant trace.
    """
    x = np.asarray(trace, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"trace must be [chain, draw] or [draw], got shape {x.shape}.")
    n = x.shape[1]
    if n < 4:
        return float("nan")
    x = x - x.mean(axis=1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(x, size, axis=1)
    acov = np.fft.irfft(spectrum * spectrum.conj(), size, axis=1)[:, :n].mean(axis=0)
    if acov[0] <= 0:
        return float("nan")
    rho = acov / acov[0]
    tau = 1.0
    for m in range(1, n):
        tau += 2.0 * rho[m]
        if m >= window_factor * tau:
            break
    return float(tau)
