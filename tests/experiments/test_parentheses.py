"""Parentheses balancing: rules, data, classifier, group susceptibilities, the experiment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from patterning_core.experiments.parentheses import strings as P
from patterning_core.experiments.parentheses.classifier import (
    ParenModelConfig,
    ParenTrainConfig,
    init_params,
    load_module,
    logits_fn,
    make_loss_fn,
    train_classifier,
)
from patterning_core.experiments.parentheses.config import ExperimentConfig, build_config
from patterning_core.experiments.parentheses.lever import LeverConfig
from patterning_core.experiments.parentheses.selection import (
    EQUAL_COUNT,
    MIXED,
    NESTED,
    UNFIT,
    classify_rule,
    group_susceptibilities,
    llc_intervention,
    sign_test,
    wilson_interval,
)
from patterning_core.experiments.parentheses.steps import (
    params_from_json,
    params_to_json,
    run_experiment,
)
from patterning_core.sampling.sgld import SamplerConfig
from patterning_core.toys import known_answers as ka
from patterning_core.toys.models import make_linear_regression

SMALL = P.ParenDataConfig(min_len=4, max_len=8, n_train=96, n_ood=32, seed=3)


# --- rules and data ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "nested", "equal"),
    [
        ("", True, True),
        ("()", True, True),
        ("(())()", True, True),
        ("((()())())", True, True),
        (")(", False, True),
        ("())(()", False, True),
        ("(()))(", False, True),
        ("(((", False, False),
        ("(()", False, False),
        ("())", False, False),
        ("))((((", False, False),
    ],
)
def test_rules_on_hand_written_strings(s, nested, equal):
    assert P.is_nested(s) is nested
    assert P.is_equal_count(s) is equal


def test_string_features():
    assert P.string_features("(()))(") == {
        "length": 6,
        "max_depth": 2,
        "min_prefix": -1,
        "num_open": 3,
        "count_gap": 0,
    }
    assert P.string_features("(()(((")["count_gap"] == 4
    with pytest.raises(ValueError):
        P.prefix_balances("(a)")


def test_training_strings_agree_under_both_rules():
    data = P.make_training_set(SMALL)
    assert len(data) == SMALL.n_train
    for s, label, kind in zip(data.strings, data.labels, data.kinds, strict=True):
        assert P.is_nested(s) == P.is_equal_count(s) == bool(label)
        assert SMALL.min_len <= len(s) <= SMALL.max_len and len(s) % 2 == 0
        if kind == "never_negative":
            assert P.prefix_balances(s).min() >= 0 and P.string_features(s)["count_gap"] > 0
        if not label:
            assert abs(P.string_features(s)["count_gap"]) in SMALL.count_gaps
    assert data.labels.mean() == pytest.approx(SMALL.balanced_share, abs=0.02)
    assert set(data.kinds) == {"nested", "never_negative", "arrangement"}


def test_ood_strings_have_equal_counts_and_are_not_nested():
    ood = P.make_ood_set(SMALL)
    assert len(ood) == SMALL.n_ood
    for s in ood.strings:
        assert P.is_equal_count(s) and not P.is_nested(s)
    assert np.all(ood.features["min_prefix"] < 0)


def test_generators_are_deterministic_and_seeded():
    a, b = P.make_training_set(SMALL), P.make_training_set(SMALL)
    assert a.strings == b.strings and np.array_equal(a.labels, b.labels)
    assert P.make_ood_set(SMALL).strings == P.make_ood_set(SMALL).strings
    assert P.make_training_set(SMALL.replace(seed=4)).strings != a.strings


def test_dyck_words_are_uniform():
    """Length 6 has 5 Dyck words; each should appear ≈ 1/5 of the time (cycle lemma)."""
    rng = np.random.default_rng(0)
    draws = [P.random_dyck_word(6, rng) for _ in range(2000)]
    counts = np.unique(draws, return_counts=True)[1]
    assert len(counts) == 5 and all(P.is_nested(s) for s in set(draws))
    # Binomial SD of a count: √(2000·0.2·0.8) ≈ 18; allow 4 SD.
    assert np.all(np.abs(counts - 400) < 72)


def test_encoding_and_groups():
    tokens = P.encode(["()", "(())"], max_len=4)
    assert tokens.tolist() == [
        [P.BOS, P.OPEN, P.CLOSE, P.EOS, P.PAD, P.PAD],
        [P.BOS, P.OPEN, P.OPEN, P.CLOSE, P.CLOSE, P.EOS],
    ]
    data = P.make_training_set(SMALL)
    index, names = P.group_units(data)
    assert index.shape == (len(data),) and np.bincount(index).min() > 0
    for g, name in enumerate(names):
        labels = data.labels[index == g]
        assert np.all(labels == (1.0 if name.startswith("bal") else 0.0))


# --- classifier ------------------------------------------------------------------------------

MODEL = ParenModelConfig(seq_len=SMALL.seq_len, d_model=8, n_layers=2, n_heads=2, d_mlp=16)


def test_functional_loss_equals_the_module_and_works_under_vmap():
    data = P.make_training_set(SMALL).tensors(SMALL.max_len)
    params = init_params(MODEL, seed=1)
    with torch.no_grad():
        eager = load_module(MODEL, params)(data[0])
        functional = logits_fn(params, data[0], MODEL)
    torch.testing.assert_close(functional, eager, rtol=1e-5, atol=1e-5)
    loss_fn = make_loss_fn(MODEL)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        eager, data[1], reduction="none"
    )
    torch.testing.assert_close(loss_fn(params, data), expected, rtol=1e-5, atol=1e-6)

    other = init_params(MODEL, seed=2)
    stacked = {k: torch.stack([params[k], other[k]]) for k in params}
    batched = torch.func.vmap(loss_fn, in_dims=(0, None))(stacked, data)
    assert batched.shape == (2, len(data[0]))
    torch.testing.assert_close(batched[0], loss_fn(params, data))
    torch.testing.assert_close(batched[1], loss_fn(other, data))
    # Gradients through vmap, as run_sgld takes them.
    leaf = {k: v.clone().requires_grad_(True) for k, v in stacked.items()}
    torch.func.vmap(loss_fn, in_dims=(0, None))(leaf, data).mean(1).sum().backward()
    assert all(torch.isfinite(v.grad).all() for v in leaf.values())


def test_init_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = init_params(MODEL, 5), init_params(MODEL, 5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["embed.weight"], init_params(MODEL, 6)["embed.weight"])


def test_uniform_weights_train_like_no_weights():
    data = P.make_training_set(SMALL).tensors(SMALL.max_len)
    cfg = ParenTrainConfig(steps=15, batch_size=32)
    plain, hist = train_classifier(data, MODEL, cfg, seed=0)
    again, _ = train_classifier(data, MODEL, cfg, seed=0)
    assert all(torch.equal(plain[k], again[k]) for k in plain), "training is deterministic"
    for c in (1.0, 2.5):
        weighted, hist_w = train_classifier(
            data, MODEL, cfg, seed=0, weights=torch.full((len(data[0]),), c)
        )
        for k in plain:
            torch.testing.assert_close(weighted[k], plain[k], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(hist_w, hist, rtol=1e-4)
    skewed = torch.ones(len(data[0]))
    skewed[data[1] > 0.5] = 5.0
    different, _ = train_classifier(data, MODEL, cfg, seed=0, weights=skewed)
    assert not torch.allclose(different["readout.bias"], plain["readout.bias"])


# --- statistics and the intervention ---------------------------------------------------------


def test_wilson_interval_and_sign_test():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert sign_test(0, 5) == pytest.approx(2 / 32)
    assert sign_test(3, 3) == 1.0


def test_classify_rule():
    assert classify_rule(0.1, 1.0) == NESTED
    assert classify_rule(0.9, 1.0) == EQUAL_COUNT
    assert classify_rule(0.5, 1.0) == MIXED
    assert classify_rule(0.0, 0.9) == UNFIT
    assert classify_rule(0.3, 1.0, threshold=0.3) == NESTED


def test_llc_intervention_weights():
    group_index = np.array([0] * 50 + [1] * 30 + [2] * 20)
    shares = np.bincount(group_index) / 100
    chi_n = np.array([[1.0, -1.0, -1.0], [1.2, -1.2, -1.2]])
    chi_e = np.array([[-0.5, 0.5, 0.5]])
    plan = llc_intervention(chi_n, chi_e, group_index, n_beta=10.0, alpha=0.5, floor=0.1)
    assert np.linalg.norm(plan["dh"]) == pytest.approx(1.0)
    assert np.allclose(plan["dh"], -plan["chi_diff"] / np.linalg.norm(plan["chi_diff"]))
    assert plan["string_weights"].mean() == pytest.approx(1.0)
    assert np.all(plan["group_weights"] > 0)
    assert np.allclose(plan["string_weights"], plan["group_weights"][group_index])
    assert plan["predicted_dllc_diff"] < 0, "the weights lower λ(Nested) − λ(Equal-Count)"
    assert np.allclose(plan["group_shares"], shares)
    floored = llc_intervention(chi_n, chi_e, group_index, n_beta=10.0, alpha=3.0, floor=0.2)
    ratio = floored["group_weights"].min() / floored["group_weights"].max()
    assert ratio == pytest.approx(0.2 / (1 + 3.0 * 1.0))  # the floor and the largest weight
    # The rule written out: ρ_g = max(1 + α·dh_g/max|dh|, floor), mean 1 over the strings.
    dh = floored["dh"]
    rho = np.maximum(1.0 + 3.0 * dh / np.abs(dh).max(), 0.2)
    np.testing.assert_array_equal(floored["group_weights"], rho / (shares @ rho))


def test_solutions_round_trip_through_json_exactly():
    import json

    params = init_params(MODEL, seed=3)
    back = params_from_json(json.loads(json.dumps(params_to_json(params))))
    assert list(back) == list(params)
    assert all(back[k].dtype == torch.float32 and torch.equal(back[k], params[k]) for k in params)


def test_config_round_trips_and_quick_keeps_the_experiment_settings():
    cfg = build_config(quick=True, seeds=5, alpha=0.3, linear_check=False)
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    assert (cfg.seeds, cfg.alpha, cfg.linear_check, cfg.data.n_train) == (5, 0.3, False, 128)
    assert build_config() == ExperimentConfig()
    with pytest.raises(ValueError, match="seeds"):
        build_config(seeds=1)


# --- group susceptibility against a Gaussian posterior ----------------------------------------

N_BETA, GAMMA, EPS, CHAINS, Z = 10.0, 1.0, 1e-2, 16, 4.0
group_of_unit = np.repeat([0, 1, 2], [10, 20, 30])


def _group_losses(X, y, w):
    return [
        ka.mean_squared_residual(X[group_of_unit == g], y[group_of_unit == g], w) for g in range(3)
    ]


def test_group_chi_matches_the_exact_gaussian_covariance():
    """χ_g = −Cov[L_n, L_g − L_n] for linear regression, whose posterior is Gaussian.

    Tolerance: the C = 16 chains are independent, so the per-chain estimates χ_g^(c) are
    i.i.d. and the pooled estimate (≈ their mean; pooling adds only O(1/draws) between-chain
    terms) has standard error SE = sd_c(χ_g^(c))/√C, estimated from the chains (t with 15
    dof). |χ̂ − χ_exact| < 4·SE fails for a correct estimator with probability ≈ 1e-3 per
    group. The exact target is the stationary law of the discretized chain (discrete Lyapunov
    equation); the true posterior may differ by the computed discretization bias, added to
    the tolerance. Autocorrelation biases each chain's sample covariance by a relative
    O(2τ/N) ≈ 2·10/2000 = 1 % (τ ≈ 1/(ε·λ_min(P)) ≈ 9 steps ≈ 5 draws), below 0.5 SE here.
    """
    loss_fn, params, data = make_linear_regression(n=60, d=3, seed=1)
    X, y, w = data[0].numpy(), data[1].numpy(), params["w"].numpy()
    config = SamplerConfig(
        step_size=EPS,
        n_beta=N_BETA,
        localization=GAMMA,
        num_chains=CHAINS,
        num_draws=2000,
        num_burnin=300,
        steps_between_draws=2,
        batch_size=None,
        seed=0,
    )
    result = group_susceptibilities(loss_fn, params, data, group_of_unit, config)
    loss = ka.mean_squared_residual(X, y, w)
    groups = _group_losses(X, y, w)

    def exact(step_size):
        post = ka.localized_gaussian(loss, N_BETA, GAMMA, step_size=step_size)
        return np.array([-post.covariance(loss, lg - loss) for lg in groups])

    discrete, continuous = exact(EPS), exact(None)
    assert np.all(result.se < 0.25 * np.abs(discrete).max()), "SE must be small vs the signal"
    np.testing.assert_array_less(np.abs(result.chi - discrete), Z * result.se)
    np.testing.assert_array_less(
        np.abs(result.chi - continuous), Z * result.se + np.abs(discrete - continuous)
    )
    # Σ_g π_g L_g = L_n at every draw, so Σ_g π_g χ_g = 0 to rounding.
    shares = np.bincount(group_of_unit) / group_of_unit.size
    assert abs(shares @ result.chi) < 1e-9 * np.abs(result.chi).max()
    assert result.per_chain.shape == (CHAINS, 3)
    assert result.loss_trace.shape == (CHAINS, 2000)
    llc_exact = N_BETA * 0.5 * np.trace(loss.A @ ka.localized_gaussian(loss, N_BETA, GAMMA).cov)
    assert result.llc == pytest.approx(llc_exact, rel=0.15)


def test_reweighting_groups_responds_as_n_beta_pi_chi():
    """d⟨L_n⟩ under ρ_g = 1 + t·δ_g (mean 1 over units) is nβ·Σ_g π_g χ_g δ_g·t (exact)."""
    _, params, data = make_linear_regression(n=60, d=3, seed=1)
    X, y, w = data[0].numpy(), data[1].numpy(), params["w"].numpy()
    loss, groups = ka.mean_squared_residual(X, y, w), _group_losses(X, y, w)
    shares = np.bincount(group_of_unit) / group_of_unit.size
    delta = np.array([1.0, -0.5, 0.2])
    delta = delta - shares @ delta  # mean-1 weights

    def mean_loss(t: float) -> float:
        tilted = ka.combine(groups, shares * (1 + t * delta))
        return ka.localized_gaussian(tilted, N_BETA, GAMMA).expect(loss)

    t = 1e-4
    derivative = (mean_loss(t) - mean_loss(-t)) / (2 * t)
    post = ka.localized_gaussian(loss, N_BETA, GAMMA)
    chi = np.array([-post.covariance(loss, lg - loss) for lg in groups])
    assert derivative == pytest.approx(N_BETA * (shares * chi) @ delta, rel=1e-5)


# --- the experiment end to end ----------------------------------------------------------------


def test_tiny_experiment_runs_end_to_end():
    tiny = SamplerConfig(
        step_size=1e-4,
        n_beta=20.0,
        localization=100.0,
        num_chains=2,
        num_draws=8,
        num_burnin=4,
        batch_size=32,
        seed=0,
    )
    cfg = ExperimentConfig(
        data=SMALL,
        model=MODEL,
        train=ParenTrainConfig(steps=40, batch_size=32, lr=1e-2),
        sampler=tiny,
        chi_sampler=tiny,
        lever=LeverConfig(sampler=tiny, direction_chains=2, check_chains=2, alphas=(0.1, 0.2)),
        probes_per_group=4,
        seeds=4,
        analyzed_per_rule=1,
        alpha=0.5,
        min_train_acc=0.0,
        retrain="always",
    )
    messages: list[str] = []
    out = run_experiment(cfg, progress=messages.append)
    assert messages and len(out["before"]) == len(out["after"]) == 4
    for key in ("summary_before", "summary_after"):
        summary = out[key]
        assert sum(summary[r]["count"] for r in (NESTED, EQUAL_COUNT, MIXED, UNFIT)) == 4
        lo, hi = summary[NESTED]["ci95"]
        assert 0 <= lo <= summary[NESTED]["fraction"] <= hi <= 1
    assert out["reference_solutions"] == {NESTED: 1, EQUAL_COUNT: 1}
    assert [(r["alpha"], r["pair"]) for r in out["linear_check"]] == [(0.1, 0), (0.2, 0)]
    # ρ − 1 is α·dh/max|dh|, so the prediction is linear in α
    low, high = (r["predicted"] for r in out["linear_check"])
    assert high == pytest.approx(2 * low, rel=1e-9, abs=1e-12)
    rho = np.array(out["weights"]["retrain_weights"])
    assert rho.shape == (SMALL.n_train,) and rho.mean() == pytest.approx(1.0)
    assert np.abs(rho - 1).max() == pytest.approx(0.5)
    values = [v for r in out["linear_check"] for v in (r["predicted"], r["measured"])]
    assert all(math.isfinite(v) for v in values)
    assert out["retrained"] and math.isfinite(out["paired_shift"]["mean"])
    assert set(out["gate"]["per_alpha"]) == {"0.1", "0.2"}
    import json

    json.dumps(out)  # plain data
