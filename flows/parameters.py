"""Typed parameters of every flow: one pydantic model per flow, validated before anything runs.

A flow takes one argument, ``params``, an instance of its model (a mapping of the same
fields is accepted too: Prefect validates it against the model, so a deployment, the UI's
form and a config file all go through the same checks). Defaults come from
``patterning_core.recipes``. Validation is strict (``"5"`` is not an integer, ``true`` is
not a number) and refuses unknown fields; the checks that need the core (a preset exists,
the data fit the model, a checkpoint step is saved by the training schedule) run in the
models' validators. :func:`describe` turns a ``ValidationError`` into one line per problem
that names the field and the fix, which is what ``patterning`` prints (exit status 2)
before any server starts.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from patterning_core.data.lm_data import check_data_spec
from patterning_core.estimators.mode_weights import DEFAULT_ALPHA
from patterning_core.experiments.induction.natural_weights import check_target_mode
from patterning_core.experiments.parentheses.config import ExperimentConfig, build_config
from patterning_core.experiments.toy_superposition.model import ToyConfig
from patterning_core.experiments.toy_superposition.patterning import DEFAULT_SAMPLER, LLC_SAMPLER
from patterning_core.model.checkpoints import read_config
from patterning_core.recipes import (
    DEMO_CHI_CHECKPOINTS,
    corpus_data,
    demo_data,
    demo_sampler,
    demo_train,
    fin_data,
    induce_data,
    induce_sampler,
    induce_train,
    spacing_train,
)
from patterning_core.sampling.config import ConfigError, SamplerConfig
from patterning_core.store.workloads import workload_kinds
from tasks.training import check_training_inputs

__all__ = [
    "ChiMapParameters",
    "DecomposeParameters",
    "FlowParameters",
    "InductionPatterningParameters",
    "ModelSpec",
    "ParenthesesParameters",
    "PipelineParameters",
    "SpacingParameters",
    "SusceptibilityParameters",
    "ToySuperpositionParameters",
    "TrainParameters",
    "describe",
]


class FlowParameters(BaseModel):
    """Base of the flows' parameter models: strict types, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True)


class RetrainingFields(FlowParameters):
    """Where a demonstration's report and training runs go, and where the runs execute:
    ``out_dir`` (default under ``$PATTERNING_HOME``), ``runs_root`` (default
    ``$PATTERNING_HOME/runs``, shared by every flow so equal runs are found again), a Dask
    cluster at ``dask_address`` or ``n_workers`` local processes (1: one by one, here),
    ``threads`` torch threads per run."""

    out_dir: str | None = None
    runs_root: str | None = None
    dask_address: str | None = None
    n_workers: int = Field(2, ge=1)
    threads: int = Field(1, ge=1)


def _check_sampler(sampler: dict) -> None:
    SamplerConfig.from_dict(sampler)


def _check_chi_checkpoints(
    schedule: list[int], chi_checkpoints: list[int], weights_step: int
) -> None:
    missing = [s for s in [*chi_checkpoints, weights_step] if s not in schedule]
    if missing or not chi_checkpoints:
        raise ConfigError(
            f"chi_checkpoints and weights_step must be checkpoints of the recipe "
            f"({schedule}); {missing} are not."
        )
    if weights_step not in chi_checkpoints:
        raise ConfigError("weights_step must be one of chi_checkpoints.")


def _check_seeds_and_alpha(seeds: list[int], alpha: float) -> None:
    if not seeds:
        raise ConfigError("seeds must be a non-empty list of integers.")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ConfigError(f"alpha must be a number >= 0, got {alpha!r}.")


class TrainParameters(FlowParameters):
    """``train`` flow: ``preset`` trained on ``data`` with the settings ``train``
    (``TrainConfig`` fields); memoized per settings and seed under ``runs_root``."""

    preset: str = "demo"
    data: dict = Field(default_factory=corpus_data)
    train: dict = Field(default_factory=lambda: {"steps": 2000})
    runs_root: str | None = None
    threads: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> TrainParameters:
        check_training_inputs(self.preset, self.data, self.train)
        return self


class ModelSpec(FlowParameters):
    """A model of one's own, its checkpoints and its data (``model.adapters.spec``), for
    every flow that estimates χ over checkpoints (``susceptibilities``, ``pipeline``).

    ``kind``:

    - ``"builtin"``: checkpoints of the project's transformer;
    - ``"transformer_lens"``: a ``HookedTransformer`` built offline from ``config``, its
      ``HookedTransformerConfig`` fields, with ``dtype`` ``"float32"`` or ``"float64"``;
    - ``"module"``: any ``torch.nn.Module``: ``factory``, an import string
      ``"package.module:build_model"`` called with ``config`` as keyword arguments,
      ``loss``, an import string of ``unit_loss(forward, batch) -> [B] or [B, T]`` per-unit
      losses (``adapters.module``), ``components`` ``{name: [parameter-name patterns]}``,
      ``dtype`` optional. The packages must be importable where the flow and its workers
      run (installed, or on ``PYTHONPATH``).

    Checkpoints: every ``*.safetensors`` file of ``checkpoint_dir`` (its step is the last
    number in its name, e.g. ``step_00001000.safetensors``) or the files
    ``checkpoint_files``; a TransformerLens or module checkpoint is a state dict.

    Data, one of: ``tokens`` (token models), a safetensors file of int64 ``train [N, T]``
    (SGLD data) and ``probes [M, T]`` token ids, of which the first ``sgld_seqs`` and
    ``probe_seqs`` rows are used (None: all); ``data`` (token models), the built-in path's
    corpus or synthetic settings (``{"source": "corpus", ...}``, ``lm_data.py``), tokenized
    for the model's context and vocabulary (a TransformerLens model's ``d_vocab`` must equal
    the tokenizer's vocabulary size), ``sgld_seqs`` (default 2048) and ``probe_seqs``
    (default 8) sequences drawn as the built-in path draws them; ``data_file`` (module
    models), a safetensors file of ``train``/``probes`` or ``train.0``, ``train.1``, … and
    ``probes.0``, … (the tensors of a batch), first rows used as above.

    ``components``: for token models the rows of χ (None: every head, MLP, ``embed`` and
    ``unembed``); for a module its components by parameter-name patterns (required).
    :meth:`resolve` checks all of it before anything runs.
    """

    kind: str
    config: dict | None = None
    dtype: Literal["float32", "float64"] | None = None
    factory: str | None = None
    loss: str | None = None
    checkpoint_dir: str | None = None
    checkpoint_files: list[str] | None = None
    tokens: str | None = None
    data: dict | None = None
    data_file: str | None = None
    sgld_seqs: int | None = Field(None, ge=1)
    probe_seqs: int | None = Field(None, ge=1)
    components: list[str] | dict[str, str | list[str]] | None = None

    def checkpoints(self) -> list[dict]:
        """``[{"step": int, "path": str}, ...]`` in step order."""
        if (self.checkpoint_dir is None) == (self.checkpoint_files is None):
            raise ConfigError("model: give checkpoint_dir or checkpoint_files (one of them).")
        if self.checkpoint_dir is not None:
            folder = Path(self.checkpoint_dir)
            if not folder.is_dir():
                raise FileNotFoundError(f"model.checkpoint_dir {folder} is not a folder.")
            files = sorted(folder.glob("*.safetensors"))
            if not files:
                raise ConfigError(f"model.checkpoint_dir {folder} holds no *.safetensors file.")
        else:
            files = [Path(f) for f in self.checkpoint_files or []]
            if not files:
                raise ConfigError("model.checkpoint_files is empty: list checkpoint files.")
        steps: dict[int, str] = {}
        for file in files:
            numbers = re.findall(r"\d+", file.stem)
            if not numbers:
                raise ConfigError(
                    f"checkpoint {file}: no step in its name; name it step_<N>.safetensors."
                )
            step = int(numbers[-1])
            if step in steps:
                raise ConfigError(f"checkpoints {steps[step]} and {file} both name step {step}.")
            steps[step] = str(file)
        return [{"step": step, "path": steps[step]} for step in sorted(steps)]

    def workload(self) -> dict:
        """The ``"model"`` workload spec (``patterning_core.store.workloads``)."""
        module = self.kind == "module"
        model: dict[str, Any] = {"kind": self.kind}
        fields = ("config", "dtype", "factory", "loss") + (("components",) if module else ())
        for name in fields:
            if getattr(self, name) is not None:
                model[name] = getattr(self, name)
        return {
            "kind": "model",
            "model": model,
            **{k: getattr(self, k) for k in ("tokens", "data", "data_file") if getattr(self, k)},
            "sgld_seqs": self.sgld_seqs,
            "probe_seqs": self.probe_seqs,
            "components": None if module else self.components,
        }

    def resolve(self) -> tuple[dict, list[dict]]:
        """``(workload, checkpoints)`` after every check that can fail before sampling
        (:func:`check_model_workload`). Shared by the flows that take a model, so each
        refuses the same specs with the same messages."""
        module = self.kind == "module"
        if module and (self.components is None or isinstance(self.components, list)):
            raise ConfigError(
                "model.components of a 'module' model: {name: [parameter-name patterns]}, "
                "e.g. {hidden: ['0.*'], readout: ['2.weight', '2.bias']}."
            )
        if not module and isinstance(self.components, dict):
            raise ConfigError(
                f"model.components of a {self.kind!r} model: a list of its component names "
                "(e.g. [L0H0, L1MLP, unembed]), or null for all."
            )
        checkpoints, workload = self.checkpoints(), self.workload()
        check_model_workload(workload, checkpoints)
        return workload, checkpoints


class SusceptibilityParameters(FlowParameters):
    """``susceptibilities`` flow: χ at every checkpoint into the Zarr store ``store``.

    The model and data: a ``model`` (:class:`ModelSpec`: a model of one's own, its
    checkpoints and tokenized data), or a ``workload`` spec
    (``patterning_core.store.workloads``) with its ``checkpoints``
    ``[{"step": int, "path": str | None}, ...]`` (a given ``model`` fills both in);
    ``sampler``: ``SamplerConfig`` fields; ``max_lanes``: cap on component × chain lanes
    per shard (None: one group per set of moving parameters); ``dask_address`` or a local
    cluster of ``n_workers`` processes of ``threads_per_worker`` threads.
    """

    store: str
    sampler: dict
    workload: dict | None = None
    checkpoints: list[dict] | None = None
    model: ModelSpec | None = None
    max_lanes: int | None = Field(None, ge=1)
    dask_address: str | None = None
    n_workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SusceptibilityParameters:
        _check_sampler(self.sampler)
        if self.model is not None:
            workload, checkpoints = self.model.resolve()
            # Validated again (Prefect checks a flow's parameters itself): the filled-in
            # values are the model's own then.
            if self.workload not in (None, workload) or self.checkpoints not in (
                None,
                checkpoints,
            ):
                raise ConfigError(
                    "give a model, or a workload with its checkpoints, not both: a model "
                    "fills in its own workload and checkpoints."
                )
            self.checkpoints, self.workload = checkpoints, workload
        if self.workload is None or self.checkpoints is None:
            raise ConfigError(
                "say what to sample: a model ({kind, checkpoint_dir, tokens, ...}), or a "
                "workload with its checkpoints."
            )
        kind = self.workload.get("kind")
        if kind not in workload_kinds():
            raise ConfigError(
                f"unknown workload kind {kind!r}; known kinds are {workload_kinds()}."
            )
        if not self.checkpoints:
            raise ConfigError('checkpoints is empty: give [{"step": STEP, "path": FILE}, ...].')
        for ckpt in self.checkpoints:
            path = ckpt.get("path")
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(
                    f"checkpoint file {path} (step {ckpt.get('step')}) does not exist; list a "
                    "run's checkpoints with "
                    "patterning_core.model.checkpoints.list_checkpoints(run_dir)."
                )
        if kind == "transformer":
            if self.checkpoints[0].get("path") is None or "data" not in self.workload:
                raise ConfigError("a transformer workload needs `data` and checkpoint paths.")
            check_data_spec(self.workload["data"], read_config(self.checkpoints[0]["path"]))
        if kind == "model" and self.model is None:  # given as a workload (a model: resolved)
            check_model_workload(self.workload, self.checkpoints)
        return self


def check_model_workload(workload: dict, checkpoints: list[dict]) -> None:
    """Check a ``"model"`` workload at its checkpoints before anything runs: the model spec
    (kind, keys, import strings) with every checkpoint file, then the model built at the
    first checkpoint with its loss evaluated on two rows of the data and of the probes
    (per-unit shape; every component selects a parameter)."""
    from patterning_core.model.adapters.spec import check_model_spec
    from patterning_core.store.workloads import build_workload

    for ckpt in checkpoints:
        check_model_spec({**workload.get("model", {}), "checkpoint": ckpt.get("path")})
    work = build_workload(workload, checkpoints[0].get("path"))
    work.loss_fn.check(work.data)
    work.loss_fn.check(work.probes)


class DecomposeParameters(FlowParameters):
    """``decompose`` flow: modes of χ at every assembled checkpoint of ``store``."""

    store: str
    out_dir: str
    by: Literal["component", "unit", "none"] = "component"
    n_modes: int = Field(8, ge=1)


class PipelineParameters(FlowParameters):
    """``pipeline`` flow: train ``preset`` on ``data`` with ``train``, χ of every head, the
    embedding and the unembedding over ``probe_seqs`` probe sequences (SGLD on
    ``sgld_seqs`` sequences) at ``chi_checkpoints`` (steps, or a count spread over the
    schedule; None: the demo's steps), modes and a report in ``out_dir`` (default
    ``$PATTERNING_HOME/pipeline/<settings digest>``).

    Or, with ``model`` (:class:`ModelSpec`, as the ``susceptibilities`` flow takes it), no
    training: χ of the model's components at ``chi_checkpoints`` of its checkpoints (None:
    all of them), modes and the report; the model spec then holds the data too, and
    ``preset``, ``data``, ``train``, ``sgld_seqs`` and ``probe_seqs`` stay unset."""

    preset: str = "demo"
    data: dict = Field(default_factory=demo_data)
    train: dict = Field(default_factory=demo_train)
    sampler: dict = Field(default_factory=demo_sampler)
    chi_checkpoints: int | list[int] | None = None
    sgld_seqs: int = Field(1024, ge=1)
    probe_seqs: int = Field(8, ge=1)
    model: ModelSpec | None = None
    out_dir: str | None = None
    dask_address: str | None = None
    n_workers: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _check(self) -> PipelineParameters:
        _check_sampler(self.sampler)
        if isinstance(self.chi_checkpoints, int) and self.chi_checkpoints < 1:
            raise ConfigError(
                f"chi_checkpoints must be >= 1 (a count), got {self.chi_checkpoints}."
            )
        if self.model is not None:
            self._check_no_training_fields()
            _, checkpoints = self.model.resolve()
            have = [c["step"] for c in checkpoints]
            where, verb = "the model has no checkpoint", "it has"
        else:
            have = check_training_inputs(self.preset, self.data, self.train).schedule()
            where, verb = "training saves no checkpoint", "it saves"
        wanted = self.chi_steps(have)
        missing = [s for s in wanted if s not in have] if isinstance(wanted, list) else []
        if missing:
            raise ConfigError(
                f"chi_checkpoints: {where} at steps {missing} ({verb} {have}); pick steps "
                "from those, or give a count."
            )
        return self

    def _check_no_training_fields(self) -> None:
        """With a model nothing is trained: the training fields must keep their defaults
        (a value given there would be silently ignored)."""
        given = [
            name
            for name in ("preset", "data", "train", "sgld_seqs", "probe_seqs")
            if getattr(self, name)
            != PipelineParameters.model_fields[name].get_default(call_default_factory=True)
        ]
        if given:
            raise ConfigError(
                f"{given}: the pipeline trains nothing when given a model; put the data and "
                "its sizes in the model spec (model.tokens or model.data, model.sgld_seqs, "
                "model.probe_seqs) and leave these unset."
            )

    def chi_steps(self, available: list[int]) -> int | list[int]:
        """``chi_checkpoints``, or its default: the demo's steps when training, every
        checkpoint of a model."""
        if self.chi_checkpoints is not None:
            return self.chi_checkpoints
        return list(available) if self.model is not None else list(DEMO_CHI_CHECKPOINTS)


class InductionPatterningParameters(RetrainingFields):
    """``induction-patterning`` flow: Induce/Repress weights from χ at ``chi_step`` of
    ``chi_store``, every condition retrained for every seed, and the report.

    ``reference_run_dir``: the run whose last checkpoint gives the head scores (None: train
    ``preset`` on ``data`` with ``train``, memoized like the pipeline's run); ``data``
    defaults to the χ store's own; ``alpha``, ``rcond``, ``negative``: magnitude,
    pseudo-inverse cut-off and negative-weight rule
    (``patterning_core.estimators.mode_weights``).
    """

    chi_store: str
    chi_step: int
    reference_run_dir: str | None = None
    preset: str = "demo"
    data: dict | None = None
    train: dict = Field(default_factory=demo_train)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    alpha: float = DEFAULT_ALPHA
    rcond: float = Field(1e-3, ge=0.0, lt=1.0)
    negative: Literal["clip", "shift"] = "clip"

    @model_validator(mode="after")
    def _check(self) -> InductionPatterningParameters:
        from patterning_core.store.chi_store import StoreError, open_chi

        try:
            store = open_chi(self.chi_store)
        except StoreError as err:
            raise ConfigError(f"chi_store: {err}") from err
        if self.data is None:
            import json

            self.data = json.loads(store.attrs.get("workload", "{}") or "{}").get("data")
            if self.data is None:
                raise ConfigError("the χ store records no data spec: pass `data` explicitly.")
        check_training_inputs(self.preset, self.data, self.train)
        _check_seeds_and_alpha(self.seeds, self.alpha)
        if self.reference_run_dir is not None and not Path(self.reference_run_dir).is_dir():
            raise ConfigError(f"reference_run_dir {self.reference_run_dir} is not a folder.")
        steps = [int(s) for s in store.checkpoint.values]
        if self.chi_step not in steps:
            raise ConfigError(f"chi_step {self.chi_step} is not in the χ store (it has {steps}).")
        return self


class SpacingParameters(RetrainingFields):
    """``spacing`` flow: the whitespace experiment (``flows/spacing.py``).

    ``seeds``: the baseline, Amplify and Suppress runs (the first seed's baseline is the
    reference); ``chi_step``: checkpoint of the reference at which χ is estimated;
    ``sgld_seqs``, ``probe_seqs``: the χ workload's SGLD data and probes; ``eval_seqs``:
    validation sequences for losses and spacing scores.
    """

    preset: str = "demo"
    data: dict = Field(default_factory=corpus_data)
    train: dict = Field(default_factory=spacing_train)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    chi_step: int = 1000
    alpha: float = 1.0
    sampler: dict = Field(default_factory=demo_sampler)
    sgld_seqs: int = Field(2048, ge=1)
    probe_seqs: int = Field(8, ge=1)
    eval_seqs: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SpacingParameters:
        schedule = check_training_inputs(self.preset, self.data, self.train).schedule()
        _check_seeds_and_alpha(self.seeds, self.alpha)
        if self.chi_step not in schedule:
            raise ConfigError(
                f"chi_step {self.chi_step} is not a checkpoint of the recipe ({schedule}); "
                "pick one of them or add it to train.checkpoint_steps."
            )
        _check_sampler(self.sampler)
        return self


class SpacingFinParameters(RetrainingFields):
    """``spacing-fin`` flow: the spacing fin grown and erased (``flows/spacing_fin.py``).

    ``seeds``: the retrained seeds (the first one's baseline is the reference);
    ``chi_checkpoints``: steps of the reference where χ and the fin metric are read;
    ``weights_step``: the one whose χ gives the suppress weights; ``sgld_seqs``,
    ``probe_seqs``: the χ workload's SGLD data and probe sequences (probe units =
    probe_seqs × (n_ctx − 1)); ``eval_seqs``: validation sequences for the losses;
    ``report_dir``: where the report, plot and ``results.json`` go (default ``out_dir``,
    which holds the χ stores and weights); ``further_mode``: also amplify a further mode
    picked by a fixed rule, its prediction written before retraining
    (``experiments/spacing/further_mode.py``); ``replica_seed``: χ of the reference's last
    χ checkpoint estimated again with this SGLD seed and read like every run, the readings'
    sampler noise (None: not measured).
    """

    preset: str = "demo"
    data: dict = Field(default_factory=fin_data)
    train: dict = Field(default_factory=spacing_train)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    chi_checkpoints: list[int] = Field(default_factory=lambda: [500, 1000, 2000, 3000])
    weights_step: int = 1000
    alpha: float = 1.0
    sampler: dict = Field(default_factory=demo_sampler)
    sgld_seqs: int = Field(1024, ge=1)
    probe_seqs: int = Field(32, ge=1)
    eval_seqs: int = Field(256, ge=1)
    report_dir: str | None = None
    further_mode: bool = True
    replica_seed: int | None = 1

    @model_validator(mode="after")
    def _check(self) -> SpacingFinParameters:
        schedule = check_training_inputs(self.preset, self.data, self.train).schedule()
        _check_seeds_and_alpha(self.seeds, self.alpha)
        if self.replica_seed is not None and self.replica_seed == self.sampler.get("seed", 0):
            raise ConfigError(
                "replica_seed must differ from the sampler's seed (or be null to skip the "
                "sampler-noise estimate)."
            )
        if self.data.get("whitespace") != "split":
            raise ConfigError(
                "the spacing fin needs runs of spaces kept as runs of tokens: set "
                "data.whitespace = 'split'."
            )
        _check_chi_checkpoints(schedule, self.chi_checkpoints, self.weights_step)
        _check_sampler(self.sampler)
        return self


class InduceParameters(RetrainingFields):
    """``induce`` flow: the induction circuit of a model trained on natural text steered by
    χ, against same-dose controls (``flows/induce.py``).

    ``seeds``: retrained seeds (the first one's baseline is the reference);
    ``chi_checkpoints``: reference checkpoints (before formation) where χ is estimated;
    ``weights_step``: the one whose χ gives the weights (its mode is checked with
    ``replica_seed``, a second SGLD seed, and its convergence with twice the draws and with
    a burn-in when ``convergence``); ``ratio``: the dose, top/bottom-decile weight ratio;
    ``n_leading``: modes searched; ``loop_seeds``: seeds whose retrained runs get χ again
    at ``weights_step`` (None: the first seed); ``sgld_seqs``, ``probe_seqs``: the χ workload (probe
    units = probe_seqs × (n_ctx − 1), natural text: validation sequences);
    ``probe_synthetic``: synthetic in-context-bigram probe sequences after the natural ones
    (the kind ``data.in_context_bigrams`` mixes into training, so that the weights of those
    training tokens are read off χ measured on their kind rather than extrapolated from
    natural text; the mode's token test and the target cosine use every probe unit);
    ``report_dir``: report, plots and ``results.json`` (default ``out_dir``);
    ``retrain_without_mode``: retrain even when the mode search finds no induction mode (by
    default the flow stops after the weights and reports the mode search);
    ``linear_check``: the two-run χ's linear response at ``weights_step`` on
    ``linear_check_seqs`` training sequences re-weighted toward the Induce weights by
    ``linear_check_fractions`` (``experiments/induction/linear_check.py``; sampler
    ``sampler``); ``extrapolator``: how the probes' solution reaches every training token,
    ``"regression"`` (dh regressed on the unit features) or ``"span"`` (the patterning
    equation solved in the features' span; ``natural_weights``); ``target_mode``: steer
    along this leading mode (2…``n_leading``) instead of the one the mode search picks, a
    design choice the report states (None: the search's); ``chi_estimator``: the χ the mode
    search, the weights and the loop's prediction read, ``"two-run"`` (the store's, the
    authors' estimator) or ``"restricted"`` (each restricted run's own −Cov_C[φ, ℓ_z − L],
    the response of the localized loss that a retrained model is measured by;
    ``chi_store.chi_at``); ``loop_sampler``: ``SamplerConfig`` fields that replace
    ``sampler``'s for the χ measured again in the loop (the loop reads each component's
    ⟨φ_C⟩, not per-token χ, so fewer chains and draws serve; when set, the baseline is
    measured again with it too, so that every shift compares like with like);
    ``weights_from_step``: the weighted conditions train unweighted up to this step and with
    their weights from it on (0: from initialization; e.g. ``weights_step``, so that the
    re-weighting starts at the checkpoint whose χ gave the weights); ``loop_step``: the
    checkpoint of every run at which the loop measures χ again (None: ``weights_step``;
    after ``weights_from_step``, or nothing has changed yet); ``balance_positions``: centre
    every condition's weights per context position (``natural_weights``), so that no
    condition moves weight between early and late positions of the context; ``target``:
    ``"mode"`` (steer the mode found, or ``target_mode``) or ``"circuit"`` (steer the
    circuit itself: dμ from the heads' later circuit scores, ``cell_weights.circuit_target``);
    ``circuit_scores``: those scores as the user states them (``{head: score}``; None: the
    reference run's own, at its last checkpoint); ``extrapolator`` ``"cells"``: one weight
    per cell of sequence kind × predictable by copying (``cell_weights``);
    ``published_chi`` with ``published_chi_sha256``: χ at ``weights_step`` read from a
    published ``chi_and_probe_weights.nc`` (its digest checked; the probes are rebuilt from
    this config's workload) instead of sampled, so no replica, convergence or chain-sign
    check is made; ``class_neutral``: every solved condition's weights divided per pattern
    class by their class mean after a power that keeps the dose at ``ratio``, so that no
    class is re-weighted and control b (the class shuffle) re-weights nothing
    (``natural_weights``, step 6).
    """

    preset: str = "demo"
    data: dict = Field(default_factory=induce_data)
    train: dict = Field(default_factory=induce_train)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    chi_checkpoints: list[int] = Field(default_factory=lambda: [12000, 15000])
    weights_step: int = 12000
    ratio: float = Field(4.0, gt=1.0)
    n_leading: int = Field(8, ge=2)
    sampler: dict = Field(default_factory=induce_sampler)
    replica_seed: int = 1
    convergence: bool = True
    loop_seeds: list[int] | None = None
    sgld_seqs: int = Field(1024, ge=1)
    probe_seqs: int = Field(32, ge=2)
    probe_repeat: float = Field(0.0, ge=0.0, le=1.0)
    probe_synthetic: int = Field(0, ge=0)
    report_dir: str | None = None
    retrain_without_mode: bool = False
    linear_check: bool = True
    linear_check_seqs: int = Field(16, ge=2)
    linear_check_fractions: list[float] = Field(default_factory=lambda: [0.1, 0.25])
    extrapolator: Literal["regression", "span", "cells"] = "regression"
    target_mode: int | None = None
    target: Literal["mode", "circuit"] = "mode"
    circuit_scores: dict[str, float] | None = None
    published_chi: str | None = None
    published_chi_sha256: str | None = None
    chi_estimator: Literal["two-run", "restricted"] = "two-run"
    loop_sampler: dict | None = None
    weights_from_step: int = Field(0, ge=0)
    loop_step: int | None = None
    balance_positions: bool = False
    class_neutral: bool = False

    def chi_workload(self) -> dict:
        """The ``"transformer"`` workload χ is estimated on (SGLD and probe sequences of
        ``data``); the probe units of the published χ are rebuilt from it."""
        return {
            "kind": "transformer",
            "data": self.data,
            "sgld_seqs": self.sgld_seqs,
            "probe_seqs": self.probe_seqs,
            # Only when set, so that stores written without them keep their identity.
            **({"probe_repeat": self.probe_repeat} if self.probe_repeat else {}),
            **({"probe_synthetic": self.probe_synthetic} if self.probe_synthetic else {}),
        }

    @property
    def loop_checkpoint(self) -> int:
        """The checkpoint at which the loop measures χ again: ``loop_step``, default
        ``weights_step``."""
        return self.weights_step if self.loop_step is None else self.loop_step

    @model_validator(mode="after")
    def _check(self) -> InduceParameters:
        check_target_mode(self.target_mode, self.n_leading)
        if self.target == "circuit" and self.target_mode is not None:
            raise ConfigError("target 'circuit' steers the circuit, not a mode: drop target_mode.")
        if self.extrapolator == "cells" and self.balance_positions:
            raise ConfigError("balance_positions does not apply to cell weights (one per cell).")
        if (self.published_chi is None) != (self.published_chi_sha256 is None):
            raise ConfigError(
                "published_chi needs published_chi_sha256 (sha256sum of the file) and the other "
                "way round, so that a changed file is refused."
            )
        if self.published_chi is not None and self.linear_check:
            raise ConfigError(
                "linear_check re-samples at the reference's checkpoint against the χ store that "
                "published_chi replaces: set linear_check false."
            )
        schedule = check_training_inputs(self.preset, self.data, self.train).schedule()
        _check_seeds_and_alpha(self.seeds, 1.0)
        _check_chi_checkpoints(schedule, self.chi_checkpoints, self.weights_step)
        if self.loop_seeds is not None and not set(self.loop_seeds) <= set(self.seeds):
            raise ConfigError(f"loop_seeds {self.loop_seeds} must be among seeds {self.seeds}.")
        if self.replica_seed == self.sampler.get("seed", 0):
            raise ConfigError("replica_seed must differ from the sampler's seed.")
        if not self.linear_check_fractions or not all(
            0 < f < 1 for f in self.linear_check_fractions
        ):
            raise ConfigError(
                "linear_check_fractions must be fractions in (0, 1) of the largest α that keeps "
                f"every weight ≥ 0, got {self.linear_check_fractions}."
            )
        _check_sampler(self.sampler)
        if self.loop_sampler is not None:
            _check_sampler({**self.sampler, **self.loop_sampler})
        if self.weights_from_step >= schedule[-1]:
            raise ConfigError(
                f"weights_from_step {self.weights_from_step} must lie before the last step "
                f"{schedule[-1]}, or the weights never apply."
            )
        loop_step = self.loop_checkpoint
        if loop_step not in schedule:
            raise ConfigError(f"loop_step {loop_step} must be a checkpoint step: {schedule}.")
        if self.weights_from_step and loop_step <= self.weights_from_step:
            raise ConfigError(
                f"loop_step {loop_step} must come after weights_from_step "
                f"{self.weights_from_step}: before it every run is the baseline."
            )
        return self


class ToySuperpositionParameters(FlowParameters):
    """``toy-superposition`` flow: demonstration 0 (``flows/toy_superposition.py``);
    ``out_dir``: report and ``results.json`` (default under ``$PATTERNING_HOME``; the
    command publishes into ``docs/results/toy_superposition``)."""

    seeds: int = Field(100, ge=2, description="retrained seeds per condition")
    chunk: int = Field(25, ge=1, description="seeds per training task")
    target: int = Field(4, ge=0, description="the feature to make the model represent")
    alpha: float = Field(1.0, gt=0, description="α of the main χ, control, naive conditions")
    sweep: list[float] = Field(default_factory=lambda: [0.25, 0.5], description="more α")
    chi_step: int = Field(20, ge=0, description="checkpoint step of χ")
    chi_seeds: int = Field(16, ge=1, description="seeds of the χ checkpoint")
    response_alphas: list[float] = Field(default_factory=lambda: [0.1, 0.3, 1.0])
    llc_per_configuration: int = Field(2, ge=1)
    control_seed: int = 0
    sampler: dict[str, Any] = Field(default_factory=DEFAULT_SAMPLER.to_dict)
    llc_sampler: dict[str, Any] = Field(default_factory=LLC_SAMPLER.to_dict)
    toy: dict[str, Any] = Field(default_factory=lambda: ToyConfig().to_dict())
    out_dir: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ToySuperpositionParameters:
        cfg = ToyConfig(**self.toy)
        if self.target >= cfg.n_features:
            raise ConfigError(f"target {self.target} is not a feature (n = {cfg.n_features})")
        SamplerConfig.from_dict(self.sampler)
        SamplerConfig.from_dict(self.llc_sampler)
        if any(a <= 0 for a in self.sweep) or any(a <= 0 or a > 1 for a in self.response_alphas):
            raise ConfigError("sweep α must be > 0 and response α in (0, 1] (weights stay ≥ 0)")
        return self

    def alphas(self) -> list[float]:
        return sorted({self.alpha, *self.sweep})

    def toy_config(self) -> ToyConfig:
        return ToyConfig(**self.toy)


def check_parameters(params: dict[str, Any]) -> ToySuperpositionParameters:
    """The validated parameters, or a ``ConfigError`` naming the problem."""
    try:
        return ToySuperpositionParameters(**params)
    except (ValidationError, ValueError) as err:
        raise ConfigError(f"toy-superposition parameters: {err}") from None


class ParenthesesParameters(BaseModel):
    """``parentheses`` flow: settings of the experiment (the flow takes ``out_dir`` beside);
    ``experiment_config()`` gives the full ``ExperimentConfig``
    (``patterning_core.experiments.parentheses.config.build_config``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seeds: int = Field(48, description="training seeds 0..seeds−1")
    analyzed_per_rule: int = Field(
        8, description="Nested and Equal-Count reference solutions (per-string χ, the check)"
    )
    alpha: float = Field(
        0.5,
        description="α of the retraining: largest relative change of a string's weight, "
        "in (0, 1), fixed before any retraining",
    )
    floor: float = Field(0.1, description="smallest group weight, before rescaling to mean 1")
    threshold: float = Field(
        0.2, description="OOD balanced rate ≤ threshold: Nested; ≥ 1 − threshold: Equal-Count"
    )
    never_negative_share: float = Field(
        0.85, description="share of unbalanced strings whose prefix balance never goes negative"
    )
    weight_decay: float = Field(0.1, description="AdamW weight decay")
    train_steps: int = Field(600, description="optimizer steps per seed")
    linear_check: bool = Field(True, description="measure Δλ at the reference solutions")
    retrain: str = Field(
        "if_validated",
        description="retrain with the weights: if_validated (only if the lever's check "
        "passes), always, never",
    )
    lever_pairs: int = Field(
        0, ge=0, description="the lever at only the first this many reference pairs (0: all)"
    )
    quick: bool = Field(False, description="tiny sizes, for a smoke test")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int) -> int:
        if v < 2:
            raise ValueError("needs at least 2 (one solution per rule); set seeds ≥ 2")
        return v

    @field_validator("analyzed_per_rule", "train_steps")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1")
        return v

    @field_validator("retrain")
    @classmethod
    def _retrain(cls, v: str) -> str:
        if v not in ("if_validated", "always", "never"):
            raise ValueError("must be if_validated, always or never")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError("must lie in (0, 1), e.g. 0.5 (the default)")
        return v

    @field_validator("weight_decay")
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if not (math.isfinite(v) and v >= 0):
            raise ValueError("must be a finite number ≥ 0")
        return v

    @field_validator("floor")
    @classmethod
    def _floor(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError("must lie in (0, 1], e.g. 0.1 (the default)")
        return v

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: float) -> float:
        if not 0 < v < 0.5:
            raise ValueError("must lie in (0, 0.5), e.g. 0.2 (the default)")
        return v

    @field_validator("never_negative_share")
    @classmethod
    def _share(cls, v: float) -> float:
        if not 0 <= v <= 1:
            raise ValueError("must lie in [0, 1]")
        return v

    @model_validator(mode="after")
    def _builds(self) -> ParenthesesParameters:
        self.experiment_config()  # any other inconsistency, as a ValueError naming it
        return self

    def experiment_config(self) -> ExperimentConfig:
        values = self.model_dump()
        return build_config(**{**values, "lever_pairs": values["lever_pairs"] or None})


def describe(error: ValidationError) -> str:
    """One line for a ``ValidationError``: ``invalid <Model>: `` then each problem, its field
    (with the value given, where it is a plain value), what is wrong and, for an unknown
    field, the fields the model has. A check of the core reads as its own message."""
    problems = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(p) for p in problem["loc"]) or "parameters"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            fields = _fields_of(error.title)
            problems.append(f"unknown parameter {where!r}; the parameters are {fields}")
            continue
        value = problem.get("input")
        if value is not None and not isinstance(value, dict | list):
            where = f"{where} = {value!r}"
        problems.append(f"{where}: {message}")
    return f"invalid {error.title}: " + "; ".join(problems)


def _fields_of(model_name: str) -> list[str]:
    """The fields of the parameter model named ``model_name`` (any subclass of BaseModel
    defined for a flow)."""
    stack = list(BaseModel.__subclasses__())
    while stack:
        model = stack.pop()
        if model.__name__ == model_name:
            return list(model.model_fields)
        stack += model.__subclasses__()
    return []


class ChiMapParameters(FlowParameters):
    """``chi-map`` flow: readouts of the χ store ``store`` (``patterning_core.store.chi_map``)
    written back next to χ, and their page in ``out_dir``.

    ``checkpoints``: steps to map (default: every assembled one); ``reference``: the step
    whose modes name the tracked modes (default: the last); ``color_by``: unit coordinates
    to colour the token embeddings by (besides ``pattern_class``); ``n_modes``, ``umap``,
    ``umap_neighbors``, ``umap_min_dist``, ``seed``: what is computed
    (``estimators.chi_map.ChiMapSettings``); ``dask_address`` or ``n_workers`` local
    processes for the checkpoints (1: one by one, here).
    """

    store: str
    out_dir: str
    checkpoints: list[int] | None = None
    reference: int | None = None
    color_by: list[str] = Field(default_factory=list)
    n_modes: int = Field(8, ge=1)
    umap: bool = True
    umap_neighbors: int = Field(15, ge=2)
    umap_min_dist: float = Field(0.1, ge=0.0, le=1.0)
    seed: int = 0
    dask_address: str | None = None
    n_workers: int = Field(1, ge=1)

    def settings(self):  # -> ChiMapSettings
        from patterning_core.estimators.chi_map import ChiMapSettings

        return ChiMapSettings(
            n_modes=self.n_modes,
            umap=self.umap,
            umap_neighbors=self.umap_neighbors,
            umap_min_dist=self.umap_min_dist,
            seed=self.seed,
        )

    @model_validator(mode="after")
    def _check(self) -> ChiMapParameters:
        from patterning_core.store.chi_map import complete_checkpoints
        from patterning_core.store.chi_store import StoreError, open_chi

        try:
            ds = open_chi(self.store)
            assembled = complete_checkpoints(self.store)
        except StoreError as err:
            raise ConfigError(f"store: {err}") from err
        names = [str(n) for n, c in ds.coords.items() if c.dims == ("unit",) and n != "unit"]
        unknown = [c for c in self.color_by if c not in names and c != "unit"]
        if unknown:
            raise ConfigError(f"color_by: no unit coordinate {unknown}; the store has {names}.")
        steps = self.checkpoints if self.checkpoints is not None else assembled
        missing = [s for s in steps if s not in assembled]
        if missing or not steps:
            raise ConfigError(
                f"checkpoints: χ is not assembled at {missing or 'any checkpoint'} (assembled: "
                f"{assembled}); run the susceptibilities flow first, or pick from those."
            )
        if self.reference is not None and self.reference not in steps:
            raise ConfigError(f"reference {self.reference} is not among the checkpoints {steps}.")
        return self
