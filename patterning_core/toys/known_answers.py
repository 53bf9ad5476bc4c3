"""Exact answers that the estimators are checked against (method.md §4, §8).

- ``polynomial_llc_by_quadrature``: the finite-n LLC of f(x) = x·w1^p1·w2^p2 by 2-D grid
  quadrature of the localized tempered posterior (no asymptotics, no sampling).
- ``aoyagi_rlct``: the learning coefficient of reduced-rank regression (Aoyagi 2005).
- ``GaussianPosterior``: closed-form moments of quadratic observables under a Gaussian,
  used for linear regression, whose localized posterior is exactly Gaussian.
- ``RegressionResponse``: linear regression's exact per-unit χ and the exact change of
  ⟨φ⟩ under a re-weighting of its units (the linear-response checks), and the exact shift
  that retraining with the weights and measuring φ again produces (the loop's reading).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def polynomial_llc_by_quadrature(
    x: np.ndarray,
    y: np.ndarray,
    powers: tuple[int, int],
    n_beta: float,
    localization: float,
    half_width: float = 6.0,
    points: int = 2401,
) -> float:
    """nβ·(E[L_n(w)] − L_n(0)) under p(w) ∝ exp(−nβ L_n(w) − γ/2‖w‖²), by quadrature.

    L_n(w) = mean_i (y_i − x_i·w1^p1·w2^p2)², expressed through the sufficient statistics
    mean(y²), mean(xy), mean(x²). The grid covers [−half_width, half_width]²; with γ = 1
    the prior mass outside ±6 is below 1e-8.
    """
    syy, sxy, sxx = float(np.mean(y * y)), float(np.mean(x * y)), float(np.mean(x * x))
    grid = np.linspace(-half_width, half_width, points)
    w1, w2 = np.meshgrid(grid, grid, indexing="ij")
    f = w1 ** powers[0] * w2 ** powers[1]
    loss = syy - 2 * f * sxy + f * f * sxx
    log_density = -n_beta * loss - 0.5 * localization * (w1**2 + w2**2)
    density = np.exp(log_density - log_density.max())
    expected_loss = float((density * loss).sum() / density.sum())
    return n_beta * (expected_loss - syy)


def aoyagi_rlct(m: int, h: int, n: int, r: int) -> float:
    """Learning coefficient of reduced-rank regression y = B·A·x (Aoyagi 2005).

    Input dimension ``m``, hidden ``h``, output ``n``, true rank ``r``; method.md's (M, H, N)
    order: e.g. (5, 3, 5, 0) → 6.5, (5, 4, 5, 0) → 8.0, (4, 3, 8, 0) → 6.0.
    """
    if n + r <= m + h and m + r <= n + h and h + r <= m + n:
        total = m + h + n + r
        if total % 2 == 0:
            return (2 * (h + r) * (m + n) - (m - n) ** 2 - (h + r) ** 2) / 8
        return (2 * (h + r) * (m + n) - (m - n) ** 2 - (h + r) ** 2 + 1) / 8
    if m + h < n + r:
        return h * m / 2
    if n + h < m + r:
        return h * n / 2
    return m * n / 2  # h + r > m + n


@dataclass(frozen=True)
class Quadratic:
    """q(δ) = ½ δᵀAδ + bᵀδ + c, a function of the displacement δ = w − w*."""

    A: np.ndarray
    b: np.ndarray
    c: float

    def __add__(self, other: Quadratic) -> Quadratic:
        return Quadratic(self.A + other.A, self.b + other.b, self.c + other.c)

    def __sub__(self, other: Quadratic) -> Quadratic:
        return Quadratic(self.A - other.A, self.b - other.b, self.c - other.c)


def combine(quadratics: list[Quadratic], weights: np.ndarray | list[float]) -> Quadratic:
    """Σ_i w_i·q_i: e.g. a re-weighted mean loss, or the mixture (1−h)·L + h·ℓ_z."""
    w = [float(x) for x in weights]
    return Quadratic(
        sum(x * q.A for x, q in zip(w, quadratics, strict=True)),
        sum(x * q.b for x, q in zip(w, quadratics, strict=True)),
        sum(x * q.c for x, q in zip(w, quadratics, strict=True)),
    )


@dataclass(frozen=True)
class GaussianPosterior:
    """δ = w − w* ~ N(mean, cov); moments of quadratics in closed form (Isserlis)."""

    mean: np.ndarray
    cov: np.ndarray

    def expect(self, q: Quadratic) -> float:
        m, S = self.mean, self.cov
        return float(0.5 * np.trace(q.A @ S) + 0.5 * m @ q.A @ m + q.b @ m + q.c)

    def covariance(self, f: Quadratic, g: Quadratic) -> float:
        m, S = self.mean, self.cov
        grad_f, grad_g = f.A @ m + f.b, g.A @ m + g.b
        return float(0.5 * np.trace(f.A @ S @ g.A @ S) + grad_f @ S @ grad_g)

    def expect_product(self, f: Quadratic, g: Quadratic) -> float:
        return self.covariance(f, g) + self.expect(f) * self.expect(g)


def squared_residual(x: np.ndarray, y: float, w_star: np.ndarray) -> Quadratic:
    """ℓ(w) = ½(y − xᵀw)² as a quadratic in δ = w − w*."""
    r = y - x @ w_star
    return Quadratic(np.outer(x, x), -r * x, 0.5 * r * r)


def mean_squared_residual(X: np.ndarray, y: np.ndarray, w_star: np.ndarray) -> Quadratic:
    """L(w) = mean_i ½(y_i − x_iᵀw)² as a quadratic in δ = w − w*."""
    r = y - X @ w_star
    n = len(y)
    return Quadratic(X.T @ X / n, -(X.T @ r) / n, 0.5 * float(r @ r) / n)


def localized_gaussian(
    loss: Quadratic,
    n_beta: float,
    localization: float,
    coords: np.ndarray | None = None,
    step_size: float | None = None,
) -> GaussianPosterior:
    """The posterior ∝ exp(−nβ·loss(δ) − γ/2‖δ‖²) over ``coords`` (others fixed at δ = 0).

    With ``step_size`` ε, returns instead the exact stationary law of the SGLD chain
    δ ← δ − (ε/2)(nβ∇loss + γδ) + √ε ξ (same mean, covariance from a discrete Lyapunov
    equation): the sampler's discretization bias is then the difference of the two.
    """
    d = loss.A.shape[0]
    coords = np.arange(d) if coords is None else np.asarray(coords)
    precision = n_beta * loss.A[np.ix_(coords, coords)] + localization * np.eye(len(coords))
    mean_c = -np.linalg.solve(precision, n_beta * loss.b[coords])
    if step_size is None:
        cov_c = np.linalg.inv(precision)
    else:
        from scipy.linalg import solve_discrete_lyapunov

        transition = np.eye(len(coords)) - 0.5 * step_size * precision
        cov_c = solve_discrete_lyapunov(transition, step_size * np.eye(len(coords)))
    mean = np.zeros(d)
    cov = np.zeros((d, d))
    mean[coords] = mean_c
    cov[np.ix_(coords, coords)] = cov_c
    return GaussianPosterior(mean, cov)


@dataclass(frozen=True)
class RegressionResponse:
    """Exact linear response of linear regression: units ℓ_z, L, φ = L − L(w*) as
    quadratics in δ, at nβ, γ, and ``step_size`` ε (the SGLD chain's stationary law; None:
    the tempered posterior itself); ``coords``: the weights that move (a component's
    restricted run; None: all of them).

    ``chi()`` is χ_z = −Cov_C[φ, ℓ_z − L] per unit under the (restricted) law (no nβ
    factor), the exact derivative of ⟨φ⟩_C; ``two_run_chi()`` is what the two-run estimator
    (``estimators.susceptibility``) converges to, whose centring means come from the full
    run instead; ``change(rho)`` the exact change of ⟨φ⟩_C when the units are re-weighted
    by ρ (mean 1), to compare with nβ·Σ_z χ_z (ρ_z − 1)/n.
    """

    units: list[Quadratic]
    loss: Quadratic
    phi: Quadratic
    n_beta: float
    localization: float
    step_size: float | None = None
    coords: tuple[int, ...] | None = None

    @classmethod
    def of(
        cls,
        X: np.ndarray,
        y: np.ndarray,
        w_star: np.ndarray,
        n_beta: float,
        localization: float,
        step_size: float | None = None,
        coords: Sequence[int] | None = None,
    ) -> RegressionResponse:
        loss = mean_squared_residual(X, y, w_star)
        units = [squared_residual(X[z], y[z], w_star) for z in range(len(y))]
        d = len(w_star)
        phi = loss - Quadratic(np.zeros((d, d)), np.zeros(d), loss.c)
        moving = None if coords is None else tuple(int(c) for c in coords)
        return cls(units, loss, phi, n_beta, localization, step_size, moving)

    def posterior(
        self, rho: np.ndarray | None = None, *, restricted: bool = True
    ) -> GaussianPosterior:
        """The localized law of the loss with units weighted by ``rho`` (None: uniform), over
        ``coords`` (``restricted=False``: every weight moves, the full run)."""
        loss = self.loss if rho is None else combine(self.units, np.asarray(rho) / len(self.units))
        coords = None if (self.coords is None or not restricted) else np.array(self.coords)
        return localized_gaussian(
            loss, self.n_beta, self.localization, coords=coords, step_size=self.step_size
        )

    def chi(self) -> np.ndarray:
        post = self.posterior()
        return np.array([-post.covariance(self.phi, lz - self.loss) for lz in self.units])

    def two_run_chi(self) -> np.ndarray:
        """E_C[φ·L] − E_C[φ·ℓ_z] − E_C[φ]·(E_full[L] − E_full[ℓ_z]) per unit: equal to
        :meth:`chi` when every weight moves; otherwise it differs by
        E_C[φ]·(E_C − E_full)[ℓ_z − L]."""
        restricted, full = self.posterior(), self.posterior(restricted=False)
        return np.array(
            [
                restricted.expect_product(self.phi, self.loss)
                - restricted.expect_product(self.phi, lz)
                - restricted.expect(self.phi) * (full.expect(self.loss) - full.expect(lz))
                for lz in self.units
            ]
        )

    def change(self, rho: np.ndarray) -> float:
        return self.posterior(rho).expect(self.phi) - self.posterior().expect(self.phi)

    def retrained_phi(self, rho: np.ndarray | None = None) -> float:
        """⟨φ⟩_C of the *unweighted* law at the checkpoint that training on the
        ``rho``-weighted loss converges to (its minimizer over every weight; None: the
        unweighted minimizer). What a loop that retrains with the weights and then
        measures φ again, as χ is measured, reads."""
        target = (
            self.loss if rho is None else combine(self.units, np.asarray(rho) / len(self.units))
        )
        shift = -np.linalg.solve(target.A, target.b)  # the retrained w* − this w*
        L = self.loss
        at_new = Quadratic(L.A, L.A @ shift + L.b, 0.0)  # φ about the new w*: L − L(w*')
        coords = None if self.coords is None else np.array(self.coords)
        law = localized_gaussian(
            at_new, self.n_beta, self.localization, coords=coords, step_size=self.step_size
        )
        return law.expect(at_new)

    def retrained_change(self, rho: np.ndarray) -> float:
        """The retrain-and-measure-again shift: :meth:`retrained_phi` of ``rho`` less that
        of the unweighted retraining. Unlike :meth:`change` (the law at a fixed w*, whose
        first-order term is nβ·Σ_z χ_z dh_z), it has no first-order term in ρ − 1 and is never
        positive: with g = ∇L at the retrained w* (restricted to the moving weights, Hessian
        H) and P = nβH + γ, ⟨φ⟩ = ½tr(HP⁻¹) − nβ gᵀP⁻¹g + ½nβ² gᵀP⁻¹HP⁻¹g, and g is first
        order in ρ − 1 (zero for the unweighted minimizer)."""
        return self.retrained_phi(rho) - self.retrained_phi()
