"""Settings of the parentheses experiment (method.md §7): data, classifier, training, samplers,
and the intervention's α and floor, with the published defaults and a tiny ``quick`` variant.

``ExperimentConfig`` is plain data (``to_dict`` / ``from_dict`` round-trip through JSON), so
each unit of work (``steps``) can be handed the parts of it that it depends on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from patterning_core.experiments.parentheses.classifier import ParenModelConfig, ParenTrainConfig
from patterning_core.experiments.parentheses.lever import LeverConfig
from patterning_core.experiments.parentheses.strings import ParenDataConfig
from patterning_core.sampling.sgld import SamplerConfig


def default_sampler() -> SamplerConfig:
    """SGLD settings for the LLC of a trained classifier (one set for all solutions).

    nβ = 148 ≈ n/ln n for n = 1024 training strings; γ = 100; ε = 5e-4, chosen so that the
    loss traces rise above L(w*) and level off within the burn-in and the chains agree
    (R̂ ≈ 1; at ε = 1e-4 the chains had not equilibrated after 200 steps). The report prints
    the health numbers of every run.
    """
    return SamplerConfig(
        step_size=5e-4,
        n_beta=148.0,
        localization=100.0,
        num_chains=4,
        num_draws=200,
        num_burnin=200,
        steps_between_draws=1,
        batch_size=64,
        seed=0,
    )


def default_chi_sampler() -> SamplerConfig:
    """The χ runs: the LLC settings (same ε, nβ, γ, burn-in, batch), run 4× longer with a
    draw every 4 steps (200 draws), since covariances need more nearly independent draws
    than means, and every draw evaluates all probe strings."""
    return default_sampler().replace(num_draws=200, steps_between_draws=4)


def default_lever() -> LeverConfig:
    """The lever's validation (``lever``): the LLC's nβ, γ and batch at a 40× smaller step,
    ε = 1.25e-5, with the burn-in (12,000 steps) and the spacing of the 30 draws (every 320
    steps) scaled up by the same factor; 8 direction chains and 16 check chains; α = 0.05,
    0.1, 0.2 (every draw evaluates all n strings).

    The step is the largest at which the sampler passes its own checks at *both* reference
    solutions (one hyperparameter set for every solution, method.md §3). At the nested
    solution (seed 0) ε = 2.5e-5 already passes (nβ²·Var(L_n)/λ ≈ 0.94, temperature check
    −0.127 ± 0.003 against −0.144; docs/results/parentheses/diagnosis.md §3b, §6); at the
    Equal-Count solution (seed 1) it does not (fluctuation ratio 38.7, temperature check
    +0.19 ± 0.21 against −7.39), and ε = 1.25e-5 does: λ 3.07 ± 0.13, fluctuation ratio
    1.09, temperature check −0.132 ± 0.007 against −0.167 (``sampler_study``). At the LLC's
    ε = 5e-4 the chains sat at an excess loss set by the step (λ ≈ 86) and responded to
    nothing. The report prints the drift of every trace (nβ·(second half − first half))
    with its SE.
    """
    return LeverConfig(
        sampler=default_sampler().replace(
            step_size=1.25e-5, num_burnin=12000, num_draws=30, steps_between_draws=320
        ),
        direction_chains=8,
        check_chains=16,
        alphas=(0.05, 0.1, 0.2),
    )


def _default_data() -> ParenDataConfig:
    return ParenDataConfig(never_negative_share=0.85)


def _default_train() -> ParenTrainConfig:
    return ParenTrainConfig(weight_decay=0.1)


@dataclass(frozen=True)
class ExperimentConfig:
    """Settings of the experiment (``steps``, ``run_experiment``).

    Attributes:
        data, model, train: the data set, classifier shape and optimizer.
        sampler: SGLD settings for the LLCs (one set for every solution).
        chi_sampler: SGLD settings for the group-χ runs (``selection.group_susceptibilities``;
            not used by the per-string lever).
        lever: the per-string χ and the linear check of the lever (``lever.LeverConfig``).
        probes_per_group: strings per group evaluated at every χ draw (None: all).
        seeds: training seeds 0..seeds−1 (each: initialization and data order).
        analyzed_per_rule: at most this many Nested and this many Equal-Count solutions
            (the lowest seeds of each) get an LLC and χ, before and after.
        alpha: α of the retraining (largest relative change of a string's weight), fixed
            before any retraining; floor: smallest group weight of the group intervention
            (``selection.llc_intervention``; the per-string weights are ≥ 1 − α > 0).
        threshold: OOD balanced rate ≤ threshold → Nested, ≥ 1 − threshold → Equal-Count.
        min_train_acc: below this training accuracy a seed is ``unfit``.
        linear_check: run the lever's linear check at the reference solutions.
        retrain: ``if_validated`` (retrain only when the linear check passes the gate),
            ``always`` or ``never``.
        lever_pairs: the lever (per-string χ, direction, check) at only the first this many
            reference solutions of each rule (None: all ``analyzed_per_rule``); a cheaper run.
    """

    data: ParenDataConfig = field(default_factory=_default_data)
    model: ParenModelConfig = field(default_factory=ParenModelConfig)
    train: ParenTrainConfig = field(default_factory=_default_train)
    sampler: SamplerConfig = field(default_factory=default_sampler)
    chi_sampler: SamplerConfig = field(default_factory=default_chi_sampler)
    lever: LeverConfig = field(default_factory=default_lever)
    probes_per_group: int | None = 32
    seeds: int = 48
    analyzed_per_rule: int = 8
    alpha: float = 0.5
    floor: float = 0.1
    threshold: float = 0.2
    min_train_acc: float = 0.99
    linear_check: bool = True
    retrain: str = "if_validated"
    lever_pairs: int | None = None

    def __post_init__(self) -> None:
        if self.model.seq_len != self.data.seq_len:
            raise ValueError(
                f"model.seq_len {self.model.seq_len} must equal data.seq_len {self.data.seq_len}."
            )
        if not 0 < self.threshold < 0.5:
            raise ValueError("threshold must lie in (0, 0.5).")
        if self.alpha < 0 or not 0 < self.floor <= 1:
            raise ValueError("need alpha ≥ 0 and 0 < floor ≤ 1.")
        if self.chi_sampler.n_beta != self.sampler.n_beta:
            raise ValueError("the χ and LLC runs must share nβ.")
        if self.retrain not in ("if_validated", "always", "never"):
            raise ValueError("retrain must be 'if_validated', 'always' or 'never'.")
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must lie in (0, 1) (string weights 1 ± α stay positive).")
        if self.lever_pairs is not None and self.lever_pairs < 1:
            raise ValueError("lever_pairs must be ≥ 1 (or None: every reference pair).")
        if self.seeds < 2 or self.analyzed_per_rule < 1:
            raise ValueError("need seeds ≥ 2 and analyzed_per_rule ≥ 1.")

    def replace(self, **changes: Any) -> ExperimentConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "lever": self.lever.to_dict()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Inverse of ``to_dict`` (JSON lists become tuples where the fields hold tuples)."""
        values = dict(values)
        return cls(
            data=data_config(values.pop("data")),
            model=ParenModelConfig(**values.pop("model")),
            train=ParenTrainConfig(**values.pop("train")),
            sampler=SamplerConfig.from_dict(values.pop("sampler")),
            chi_sampler=SamplerConfig.from_dict(values.pop("chi_sampler")),
            lever=LeverConfig.from_dict(values.pop("lever")),
            **values,
        )


def data_config(values: dict[str, Any]) -> ParenDataConfig:
    """``ParenDataConfig`` from its ``to_dict`` form (``count_gaps`` a list in JSON)."""
    return ParenDataConfig(**{**values, "count_gaps": tuple(values["count_gaps"])})


def build_config(
    *,
    seeds: int = 48,
    analyzed_per_rule: int = 8,
    alpha: float = 0.5,
    floor: float = 0.1,
    threshold: float = 0.2,
    never_negative_share: float = 0.85,
    weight_decay: float = 0.1,
    train_steps: int = 600,
    linear_check: bool = True,
    retrain: str = "if_validated",
    lever_pairs: int | None = None,
    quick: bool = False,
) -> ExperimentConfig:
    """The ``ExperimentConfig`` of the experiment's settings (the command line's options).

    ``quick``: tiny sizes for a smoke test (128 strings of length 4–8, d_model 8, 60 steps,
    10 draws; the lever 2 + 3 chains, 12 draws, α 0.1); it replaces the data, model, training
    and sampler settings, keeping ``seeds``, ``analyzed_per_rule``, ``alpha``, ``floor``,
    ``threshold``, ``linear_check``, ``retrain`` and ``lever_pairs``.
    """
    cfg = ExperimentConfig()
    data = cfg.data.replace(never_negative_share=never_negative_share)
    train = cfg.train.replace(weight_decay=weight_decay, steps=train_steps)
    cfg = cfg.replace(
        data=data,
        train=train,
        seeds=seeds,
        analyzed_per_rule=analyzed_per_rule,
        alpha=alpha,
        floor=floor,
        threshold=threshold,
        linear_check=linear_check,
        retrain=retrain,
        lever_pairs=lever_pairs,
    )
    if quick:
        data = ParenDataConfig(
            min_len=4, max_len=8, n_train=128, n_ood=64, never_negative_share=0.85
        )
        cfg = cfg.replace(
            data=data,
            model=cfg.model.replace(seq_len=data.seq_len, d_model=8, d_mlp=16),
            train=ParenTrainConfig(steps=60, batch_size=32, lr=1e-2, weight_decay=0.1),
            sampler=cfg.sampler.replace(num_draws=10, num_burnin=5, n_beta=30.0),
            chi_sampler=cfg.chi_sampler.replace(num_draws=10, num_burnin=5, n_beta=30.0),
            lever=LeverConfig(
                sampler=cfg.sampler.replace(num_draws=12, num_burnin=20, n_beta=30.0),
                direction_chains=2,
                check_chains=3,
                alphas=(0.1,),
                chunk=128,
            ),
            probes_per_group=4,
            min_train_acc=0.0,
        )
    return cfg
