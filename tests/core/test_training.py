"""Training: schedule, data order, weights ρ, checkpoints, exact resume."""

from __future__ import annotations

import dataclasses
import json
from functools import partial

import pytest
import torch

from patterning_core.model.checkpoints import list_checkpoints, load_checkpoint
from patterning_core.model.training import (
    TrainConfig,
    batch_indices,
    checkpoint_schedule,
    copy_run_prefix,
    evaluate,
    load_train_log,
    train,
)
from patterning_core.model.transformer import TransformerConfig, init_params

CFG = TransformerConfig(n_layers=2, n_heads=2, d_model=16, d_head=4, n_ctx=12, d_vocab=23)
TOKENS = torch.randint(0, 23, (40, 12), generator=torch.Generator().manual_seed(0))
TC = TrainConfig(steps=12, batch_size=8, lr=3e-3, seed=7, checkpoint_steps=(3, 5, 9))


class InterruptError(Exception):
    """Raised by :func:`_stop_at` to interrupt a training run."""


def _stop_at(stop: int):
    """A training callback that interrupts the run after step ``stop``."""

    def callback(step, params, loss):
        if step == stop:
            raise InterruptError

    return callback


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_schedule() -> None:
    s = checkpoint_schedule(1000, n_log=4, n_linear=4)
    assert s == [0, 1, 10, 100, 250, 500, 750, 1000]
    s = checkpoint_schedule(5000)
    assert s[0] == 0 and s[-1] == 5000 and s == sorted(set(s))
    assert sum(1 for x in s if x < 100) >= 8  # dense early
    assert checkpoint_schedule(0) == [0]
    assert TrainConfig(steps=10, checkpoint_steps=(4,)).schedule() == [0, 4, 10]
    assert TrainConfig(steps=10, checkpoint_steps=(4, 11)).schedule() == [0, 4, 10]
    with pytest.raises(ValueError, match=">= 0"):
        TrainConfig(steps=10, checkpoint_steps=(-1,)).schedule()


def test_data_order_is_seeded_epochs() -> None:
    first_epoch = torch.cat([batch_indices(40, 8, seed=1, step=s) for s in range(5)])
    assert sorted(first_epoch.tolist()) == list(range(40))  # a permutation per epoch
    assert torch.equal(batch_indices(40, 8, 1, 3), batch_indices(40, 8, 1, 3))
    assert not torch.equal(batch_indices(40, 8, 1, 0), batch_indices(40, 8, 2, 0))
    # a batch straddling two epochs
    assert len(batch_indices(40, 16, 1, 2)) == 16


def test_same_seed_same_init_and_order_whatever_the_weights() -> None:
    seen: dict[str, list[torch.Tensor]] = {"a": [], "b": []}
    plain = train(CFG, TOKENS, TC, progress=False)
    weights = torch.rand(40, 11, generator=torch.Generator().manual_seed(3))
    weighted = train(CFG, TOKENS, TC, weights=weights, progress=False)
    # same initialization: both start from init_params(config, seed) ...
    assert _equal(init_params(CFG, 7), init_params(CFG, 7))
    # ... and the unweighted loss of step 1 (same batch, same init) is identical
    assert plain.losses[0] == weighted.losses[0]
    assert plain.objectives[0] != weighted.objectives[0]
    assert not _equal(plain.params, weighted.params)
    del seen


def test_weights_are_normalized_by_their_sum() -> None:
    plain = train(CFG, TOKENS, TC, progress=False)
    doubled = train(CFG, TOKENS, TC, weights=torch.full((40, 11), 2.0), progress=False)
    for k in plain.params:
        torch.testing.assert_close(plain.params[k], doubled.params[k], rtol=1e-5, atol=1e-6)
    # weight only on the last unit of each sequence == training on that unit alone
    w = torch.zeros(40, 11)
    w[:, -1] = 1.0
    last_only = train(CFG, TOKENS, dataclasses.replace(TC, steps=1), weights=w, progress=False)
    params = init_params(CFG, 7)
    from patterning_core.model.training import batch_indices as bi
    from patterning_core.model.transformer import loss_per_token

    batch = TOKENS[bi(40, 8, 7, 0)]
    assert (
        abs(last_only.objectives[0] - loss_per_token(params, batch, CFG)[:, -1].mean().item())
        < 1e-5
    )


def test_bad_weights_and_tokens_are_named() -> None:
    with pytest.raises(ValueError, match=r"shape \[N, T - 1\] = \[40, 11\]"):
        train(CFG, TOKENS, TC, weights=torch.ones(40, 12), progress=False)
    with pytest.raises(ValueError, match="clip negative"):
        train(CFG, TOKENS, TC, weights=-torch.ones(40, 11), progress=False)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 23\)"):
        train(CFG, TOKENS + 30, TC, progress=False)


def test_checkpoints_metadata_and_log(tmp_path) -> None:
    result = train(CFG, TOKENS, TC, run_dir=tmp_path, progress=False, val_tokens=TOKENS[:8])
    steps = [s for s, _ in list_checkpoints(tmp_path)]
    assert steps == [0, 3, 5, 9, 12]
    ckpt = load_checkpoint(tmp_path / "step_00000009.safetensors", expected_config=CFG)
    assert (ckpt.step, ckpt.data_position) == (9, 72)
    assert ckpt.extra["train"]["seed"] == 7
    assert _equal(
        load_checkpoint(tmp_path / "step_00000000.safetensors").params, init_params(CFG, 7)
    )
    assert _equal(load_checkpoint(tmp_path / "step_00000012.safetensors").params, result.params)
    # only the latest optimizer state is kept
    assert sorted(p.name for p in tmp_path.glob("*.optim.safetensors")) == [
        "step_00000012.optim.safetensors"
    ]
    log = load_train_log(tmp_path)
    assert log["steps"] == list(range(1, 13)) and len(log["loss"]) == 12
    assert log["val_steps"] == [0, 3, 5, 9, 12]
    assert json.loads((tmp_path / "train_log.json").read_text())["loss"] == result.losses


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
def test_resume_after_interruption_reproduces_the_run(tmp_path, fused: bool) -> None:
    tc = dataclasses.replace(TC, fused=fused)
    full = train(CFG, TOKENS, tc, run_dir=tmp_path / "full", progress=False)

    with pytest.raises(InterruptError):
        train(CFG, TOKENS, tc, run_dir=tmp_path / "cut", progress=False, callback=_stop_at(7))
    assert [s for s, _ in list_checkpoints(tmp_path / "cut")] == [0, 3, 5]
    resumed = train(CFG, TOKENS, tc, run_dir=tmp_path / "cut", progress=False)
    assert resumed.resumed_from == 5
    assert _equal(resumed.params, full.params)
    assert resumed.losses == full.losses and resumed.steps == full.steps
    assert load_train_log(tmp_path / "cut") == load_train_log(tmp_path / "full")


def test_resume_refuses_different_settings(tmp_path) -> None:
    train(CFG, TOKENS, dataclasses.replace(TC, steps=3), run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="weights_digest"):
        train(CFG, TOKENS, TC, run_dir=tmp_path, weights=torch.rand(40, 11), progress=False)
    with pytest.raises(ValueError, match="n_heads: found 2, expected 1"):
        train(dataclasses.replace(CFG, n_heads=1), TOKENS, TC, run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="'fused': True"):  # other kernels, other rounding
        train(CFG, TOKENS, dataclasses.replace(TC, fused=True), run_dir=tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="resume=True"):
        train(CFG, TOKENS, TC, run_dir=tmp_path, resume=False, progress=False)
    # extending the same run is fine
    assert train(CFG, TOKENS, TC, run_dir=tmp_path, progress=False).resumed_from == 3


def test_weights_from_a_step_leave_the_run_uniform_before_it(tmp_path) -> None:
    """``weights_from_step=S``: the checkpoints up to S are the uniform run's, bit for bit
    (same init, data order, objective); after S the weights act; S beyond the run gives the
    uniform run; resuming across S reproduces the uninterrupted run; a run re-weighted from
    S refuses to resume one re-weighted from the start."""
    weights = torch.rand(40, 11, generator=torch.Generator().manual_seed(3))
    plain = train(CFG, TOKENS, TC, run_dir=tmp_path / "plain", progress=False)
    late_tc = dataclasses.replace(TC, weights_from_step=5)
    late = train(CFG, TOKENS, late_tc, weights=weights, run_dir=tmp_path / "late", progress=False)
    for (s, a), (_, b) in zip(
        list_checkpoints(tmp_path / "plain"), list_checkpoints(tmp_path / "late"), strict=True
    ):
        same = _equal(load_checkpoint(a).params, load_checkpoint(b).params)
        assert same == (s <= 5), s
    assert late.objectives[:5] == plain.objectives[:5] and late.objectives[5] != late.losses[5]
    never = train(
        CFG, TOKENS, dataclasses.replace(TC, weights_from_step=12), weights=weights, progress=False
    )
    assert _equal(never.params, plain.params)

    with pytest.raises(InterruptError):
        train(
            CFG,
            TOKENS,
            late_tc,
            weights=weights,
            run_dir=tmp_path / "cut",
            progress=False,
            callback=_stop_at(4),
        )
    resumed = train(CFG, TOKENS, late_tc, weights=weights, run_dir=tmp_path / "cut", progress=False)
    assert resumed.resumed_from == 3 and _equal(resumed.params, late.params)
    with pytest.raises(ValueError, match="weights_from_step"):
        train(CFG, TOKENS, TC, weights=weights, run_dir=tmp_path / "late", progress=False)
    # runs weighted from the start keep the fingerprint they had before the option existed
    assert "weights_from_step" not in TC.resume_key()
    with pytest.raises(ValueError, match="weights_from_step must be >= 0"):
        TrainConfig(steps=3, weights_from_step=-1)


def test_a_weighted_run_starts_from_the_uniform_prefix_and_ends_bit_for_bit_the_same(
    tmp_path,
) -> None:
    """A run re-weighted from S resumes from the uniform run cut at S (``steps=S``) and
    ends exactly where the same run trained from the start ends; a prefix beyond S, or one
    trained with other settings, is refused."""
    weights = torch.rand(40, 11, generator=torch.Generator().manual_seed(3))
    late_tc = dataclasses.replace(TC, weights_from_step=5)
    direct = train(
        CFG, TOKENS, late_tc, weights=weights, run_dir=tmp_path / "direct", progress=False
    )
    train(
        CFG, TOKENS, dataclasses.replace(TC, steps=5), run_dir=tmp_path / "prefix", progress=False
    )
    assert copy_run_prefix(tmp_path / "late", tmp_path / "prefix", up_to_step=5) == 5
    assert copy_run_prefix(tmp_path / "late", tmp_path / "prefix") is None  # not empty now
    late = train(CFG, TOKENS, late_tc, weights=weights, run_dir=tmp_path / "late", progress=False)
    assert late.resumed_from == 5 and _equal(late.params, direct.params)
    assert [s for s, _ in list_checkpoints(tmp_path / "late")] == [0, 3, 5, 9, 12]
    assert load_train_log(tmp_path / "late")["loss"] == load_train_log(tmp_path / "direct")["loss"]

    # the uniform run past S is not the weighted run's: its step-9 state is refused
    train(CFG, TOKENS, TC, run_dir=tmp_path / "plain", progress=False)
    cut = tmp_path / "plain_to_9"
    train(CFG, TOKENS, dataclasses.replace(TC, steps=9), run_dir=cut, progress=False)
    assert copy_run_prefix(tmp_path / "past", cut) == 9
    with pytest.raises(ValueError, match="weights_digest"):
        train(CFG, TOKENS, late_tc, weights=weights, run_dir=tmp_path / "past", progress=False)
    # a prefix trained at another learning rate is refused too
    other = tmp_path / "other_lr"
    train(CFG, TOKENS, dataclasses.replace(TC, steps=5, lr=1e-3), run_dir=other, progress=False)
    assert copy_run_prefix(tmp_path / "wrong", other, up_to_step=5) == 5
    with pytest.raises(ValueError, match="train"):
        train(CFG, TOKENS, late_tc, weights=weights, run_dir=tmp_path / "wrong", progress=False)


def test_copy_run_prefix_continues_a_shorter_run_exactly(tmp_path) -> None:
    """A shorter run copied into an empty folder and resumed with more steps equals the
    longer run trained in one go; nothing is copied into a folder that holds files, or from
    a run without checkpoints up to the step."""
    weights = torch.rand(40, 11, generator=torch.Generator().manual_seed(0))
    short = dataclasses.replace(TC, steps=9)
    train(CFG, TOKENS, short, weights=weights, run_dir=tmp_path / "short", progress=False)
    assert copy_run_prefix(tmp_path / "long", tmp_path / "short") == 9
    long = train(CFG, TOKENS, TC, weights=weights, run_dir=tmp_path / "long", progress=False)
    direct = train(CFG, TOKENS, TC, weights=weights, run_dir=tmp_path / "direct", progress=False)
    assert long.resumed_from == 9 and _equal(long.params, direct.params)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert copy_run_prefix(tmp_path / "busy", tmp_path / "short") is None
    assert copy_run_prefix(tmp_path / "none", tmp_path / "short", up_to_step=-1) is None
    assert not (tmp_path / "none").exists()
    # the copied checkpoints are the source's files (hard links where possible), unchanged
    a = load_checkpoint(tmp_path / "long" / "step_00000005.safetensors").params
    b = load_checkpoint(tmp_path / "short" / "step_00000005.safetensors").params
    assert _equal(a, b)


def test_training_on_a_named_device_is_the_same_run(tmp_path) -> None:
    """``device="cpu"`` is the run without a device, bit for bit (checkpoints, losses)."""
    weights = torch.rand(40, 11, generator=torch.Generator().manual_seed(1))
    plain = train(CFG, TOKENS, TC, weights=weights, run_dir=tmp_path / "a", progress=False)
    named = train(
        CFG, TOKENS, TC, weights=weights, run_dir=tmp_path / "b", progress=False, device="cpu"
    )
    assert _equal(plain.params, named.params) and plain.losses == named.losses


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_training_on_a_gpu_follows_the_cpu_run(tmp_path) -> None:
    """The same weighted run on the GPU, interrupted and resumed there: the same data order
    and initialization, so the training and validation losses follow the CPU run to float32
    rounding (12 Adam steps of a 2-layer model: relative differences of order 1e-6 per step,
    so 1e-4 leaves two orders of magnitude), and its checkpoints are saved on the CPU. The
    weights are compared through those losses, not one by one: Adam divides each gradient
    by its own running scale, so a parameter whose gradient is at rounding level moves by
    up to the learning rate in a direction rounding decides (seen on an H200: 2e-3 on one
    bias, the losses equal to 1e-5)."""
    weights = torch.rand(40, 11, generator=torch.Generator().manual_seed(1))
    run = partial(train, CFG, TOKENS, TC, weights=weights, progress=False)
    cpu = run(run_dir=tmp_path / "cpu")
    with pytest.raises(InterruptError):
        run(run_dir=tmp_path / "gpu", callback=_stop_at(7), device="cuda")
    gpu = run(run_dir=tmp_path / "gpu", device="cuda", val_tokens=TOKENS[:8])
    assert gpu.resumed_from == 5
    torch.testing.assert_close(
        torch.tensor(gpu.losses), torch.tensor(cpu.losses), rtol=1e-4, atol=1e-5
    )
    cpu_val = evaluate(cpu.params, CFG, TOKENS[:8])
    gpu_val = evaluate({k: v.cpu() for k, v in gpu.params.items()}, CFG, TOKENS[:8])
    assert gpu_val == pytest.approx(cpu_val, rel=1e-4)
    last = load_checkpoint(list_checkpoints(tmp_path / "gpu")[-1][1])
    assert all(v.device.type == "cpu" for v in last.params.values())
