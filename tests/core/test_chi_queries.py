"""Querying cached χ: selections by token property without ``.compute()``, several runs in
one Dataset, and readers while a run is writing the store."""

from __future__ import annotations

import threading

import dask
import numpy as np
import pytest

from patterning_core.store import StoreError, open_chi, open_runs
from patterning_core.store.chi_store import assemble_chi, write_shard
from patterning_core.store.runs import run_labels
from tests.chi_stores import (
    CHECKPOINTS,
    COMPONENTS,
    complete_store,
    new_store,
    shards,
    unit_coords,
)

SMALL = ["L0H0", "L1H3", "embed"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return complete_store(tmp_path_factory.mktemp("queries") / "demo" / "chi.zarr", seed=0)


def refuse_dask(*args, **kwargs):
    raise AssertionError("a dask graph was computed")


def test_coordinates_are_read_when_opened_and_chi_stays_lazy(store):
    with dask.config.set(scheduler=refuse_dask):  # opening computes nothing through dask
        ds = open_chi(store)
    for name in ("sequence", "position", "token_id", "token_text", "pattern_class"):
        assert isinstance(ds[name].data, np.ndarray), name
    assert isinstance(ds["chi_complete"].data, np.ndarray)
    assert isinstance(ds["chi"].data, dask.array.Array)
    assert isinstance(ds["probe_mean"].data, dask.array.Array)
    # One dask block per Zarr chunk: χ one per checkpoint, statistics one per shard.
    assert ds["chi"].data.chunksize == (1, len(COMPONENTS), 24)
    assert ds["probe_mean"].data.chunksize == (1, 1, 1, 24)
    units = unit_coords()
    np.testing.assert_array_equal(ds["token_id"].values, units["token_id"])
    assert list(ds["pattern_class"].values) == list(units["pattern_class"])


def test_selections_by_token_property_match_numpy(store):
    ds = open_chi(store)
    raw = ds["chi"].values  # [checkpoint, component, unit]
    cls = np.array([str(c) for c in ds["pattern_class"].values])
    text = np.array([str(t) for t in ds["token_text"].values])
    pos = ds["position"].values
    k3000, l1h3 = CHECKPOINTS.index(3000), COMPONENTS.index("L1H3")
    assert np.isfinite(raw).all()

    chi = ds.chi.sel(checkpoint=3000)
    induction = chi.where(chi.pattern_class == "induction", drop=True).mean("unit")
    np.testing.assert_allclose(induction.values, raw[k3000][:, cls == "induction"].mean(1))

    by_class = chi.groupby("pattern_class").mean("unit")
    assert sorted(by_class.pattern_class.values) == sorted(set(cls))
    for name in set(cls):
        np.testing.assert_allclose(
            by_class.sel(pattern_class=name).values, raw[k3000][:, cls == name].mean(1)
        )

    newline = chi.sel(component="L1H3").where(chi.token_text == "\n", drop=True)
    np.testing.assert_array_equal(newline.values, raw[k3000, l1h3, text == "\n"])
    assert newline.sizes["unit"] == (text == "\n").sum() > 0

    late = ds.chi.sel(component=["L1H3", "embed"]).where(ds.position >= 5, drop=True)
    picked = [l1h3, COMPONENTS.index("embed")]
    np.testing.assert_array_equal(late.values, raw[:, picked][:, :, pos >= 5])

    first_units = ds.chi.isel(unit=slice(0, 5), checkpoint=-1)
    np.testing.assert_array_equal(first_units.values, raw[-1, :, :5])
    assert list(first_units.token_text.values) == list(text[:5])

    head = chi.sel(component="L1H3")
    top = head.sortby(head).isel(unit=slice(0, 3))
    order = np.argsort(raw[k3000, l1h3], kind="stable")[:3]
    np.testing.assert_array_equal(top.values, raw[k3000, l1h3, order])
    assert list(top.token_text.values) == list(text[order])


# ----------------------------------------------------------------------------- several runs


def test_several_runs_align_on_components_and_units(tmp_path):
    a = complete_store(tmp_path / "base" / "chi.zarr", seed=0, checkpoints=[1000, 2000])
    b = complete_store(  # other component order, one checkpoint more, one less
        tmp_path / "retrained" / "chi.zarr",
        seed=1,
        checkpoints=[2000, 3000],
        components=SMALL[::-1],
    )
    ds = open_chi([a, b])
    assert list(ds.run.values) == ["base", "retrained"]  # folder of each chi.zarr
    assert list(ds.store.values) == [str(a), str(b)]
    assert ds["chi"].dims == ("run", "checkpoint", "component", "unit")
    assert list(ds.checkpoint.values) == [1000, 2000, 3000]
    assert list(ds.component.values) == COMPONENTS  # the first store's order
    assert isinstance(ds["pattern_class"].data, np.ndarray)
    assert ds["chi_complete"].values.tolist() == [[True, True, False], [False, True, True]]

    alone_a, alone_b = open_chi(a), open_chi(b)
    np.testing.assert_array_equal(
        ds.chi.sel(run="base", checkpoint=[1000, 2000]).values, alone_a.chi.values
    )
    np.testing.assert_array_equal(
        ds.chi.sel(run="retrained", checkpoint=[2000, 3000], component=SMALL[::-1]).values,
        alone_b.chi.values,
    )
    assert np.isnan(ds.chi.sel(run="base", checkpoint=3000).values).all()
    others = [c for c in COMPONENTS if c not in SMALL]
    assert np.isnan(ds.chi.sel(run="retrained", component=others).values).all()

    # Baseline against retrained at a checkpoint both have: the difference per class.
    diff = ds.chi.sel(run="retrained") - ds.chi.sel(run="base")
    per_class = diff.sel(checkpoint=2000, component="L1H3").groupby("pattern_class").mean("unit")
    cls = np.array([str(c) for c in ds.pattern_class.values])
    raw = (
        alone_b.chi.sel(checkpoint=2000, component="L1H3").values
        - alone_a.chi.sel(checkpoint=2000, component="L1H3").values
    )
    for name in set(cls):
        np.testing.assert_allclose(per_class.sel(pattern_class=name), raw[cls == name].mean())

    labelled = open_runs([a, b], runs=["baseline", "seed 1"], use_dask=False)
    assert list(labelled.run.values) == ["baseline", "seed 1"]
    assert isinstance(labelled["chi"].data, np.ndarray)
    np.testing.assert_array_equal(labelled.chi.values, ds.chi.values)


def test_runs_on_other_probe_units_are_a_clear_error(tmp_path):
    a = complete_store(tmp_path / "a.zarr", components=SMALL, checkpoints=[1000])
    moved = unit_coords()
    moved["token_id"] = moved["token_id"].copy()
    moved["token_id"][[3, 7]] = 99
    b = complete_store(tmp_path / "b.zarr", components=SMALL, checkpoints=[1000], units=moved)
    with pytest.raises(StoreError, match=r"token_id differs at 2 of 24 units \(first at unit 3"):
        open_chi([a, b])
    fewer = complete_store(
        tmp_path / "c.zarr", components=SMALL, checkpoints=[1000], units=unit_coords(n_seqs=2)
    )
    with pytest.raises(StoreError, match="'a' and 'c' have different probe units: 24 units "):
        open_chi([a, fewer])
    unlabelled = {k: v for k, v in unit_coords().items() if k != "pattern_class"}
    d = complete_store(tmp_path / "d.zarr", components=SMALL, checkpoints=[1000], units=unlabelled)
    with pytest.raises(StoreError, match=r"\['pattern_class'\] only in 'a'"):
        open_chi([a, d])


def test_run_labels():
    assert run_labels(["x/demo/chi.zarr", "y/seed1.zarr"]) == ["demo", "seed1"]
    assert run_labels(["memory://p/q/chi.zarr"]) == ["q"]
    assert run_labels(["a/demo/chi.zarr", "b/demo/chi.zarr"]) == [
        "a/demo/chi.zarr",
        "b/demo/chi.zarr",
    ]
    assert run_labels(["a/chi.zarr"], attrs=[{"run_name": "baseline"}]) == ["baseline"]
    with pytest.raises(ValueError, match="2 run labels for 1 stores"):
        run_labels(["a/chi.zarr"], ["x", "y"])
    with pytest.raises(ValueError, match="repeat"):
        run_labels(["a.zarr", "b.zarr"], ["x", "x"])
    with pytest.raises(TypeError, match="several stores"):
        open_chi("a.zarr", runs=["x"])


# ----------------------------------------------------------------------------- while writing


def test_a_reader_during_a_run_sees_only_complete_checkpoints(tmp_path):
    """A writer thread runs checkpoint 2000 shard by shard (held at an event after each
    shard and after assembly); checkpoint 1000 is complete before it starts. At every
    pause a reader sees checkpoint 1000's χ unchanged and checkpoint 2000 all NaN with
    ``chi_complete`` False, until its χ is assembled; then exactly that χ."""
    path = tmp_path / "chi.zarr"
    n_units = len(unit_coords()["position"])
    new_store(path, checkpoints=[1000, 2000], components=SMALL)
    for shard in shards(SMALL, n_units, seed=1):
        write_shard(path, 1000, shard)
    before = assemble_chi(path, 1000).values
    pending = shards(SMALL, n_units, seed=2)

    paused, resume = threading.Event(), threading.Event()
    steps: list[str] = []
    errors: list[BaseException] = []
    assembled = {}

    def pause(step: str) -> None:
        steps.append(step)
        paused.set()
        if not resume.wait(60):
            raise TimeoutError("the reader never resumed the writer")
        resume.clear()

    def run() -> None:
        try:
            for k, shard in enumerate(pending):
                write_shard(path, 2000, shard)
                pause(f"shard {k} written")
            assembled["chi"] = assemble_chi(path, 2000).values
            pause("assembled")
        except BaseException as err:  # reported to the test, not lost in the thread
            errors.append(err)
            paused.set()

    writer = threading.Thread(target=run, daemon=True)
    writer.start()
    seen = []
    try:
        for _ in range(len(pending) + 1):
            assert paused.wait(60), "the writer never paused"
            paused.clear()
            assert not errors, errors
            ds = open_chi(path)
            np.testing.assert_array_equal(ds.chi.sel(checkpoint=1000).values, before)
            done = bool(ds.chi_complete.sel(checkpoint=2000))
            chi = ds.chi.sel(checkpoint=2000).values
            if steps[-1] == "assembled":
                assert done
                np.testing.assert_array_equal(chi, assembled["chi"])
            else:
                assert not done and np.isnan(chi).all()
                assert ds.chi_complete.values.tolist() == [True, False]
            seen.append((steps[-1], done))
            resume.set()
    finally:
        resume.set()
        writer.join(60)
    assert not errors and not writer.is_alive()
    assert seen == [("shard 0 written", False), ("shard 1 written", False), ("assembled", True)]


def test_readers_racing_a_run_never_see_a_partial_checkpoint(tmp_path):
    """The same run without pauses: a reader opening the store over and over while every
    checkpoint is written and assembled sees, per checkpoint, either all NaN (not
    complete) or exactly the final χ."""
    reference = complete_store(tmp_path / "reference.zarr", seed=3, components=SMALL)
    final = open_chi(reference, use_dask=False).chi.values
    path = tmp_path / "chi.zarr"
    n_units = len(unit_coords()["position"])
    new_store(path, components=SMALL)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for i, step in enumerate(CHECKPOINTS):
                for shard in shards(SMALL, n_units, 3 * 1000 + i):
                    write_shard(path, step, shard)
                assemble_chi(path, step)
        except BaseException as err:
            errors.append(err)

    writer = threading.Thread(target=run, daemon=True)
    writer.start()
    states = set()
    while True:
        finished = not writer.is_alive()
        ds = open_chi(path)
        chi, complete = ds.chi.values, ds.chi_complete.values
        for k in range(len(CHECKPOINTS)):
            if complete[k]:
                np.testing.assert_array_equal(chi[k], final[k])
            else:
                assert np.isnan(chi[k]).all()
        states.add(tuple(complete.tolist()))
        if finished:
            break
    writer.join()
    assert not errors, errors
    assert (True, True, True) in states and len(states) >= 2


def test_chi_at_reads_the_stored_or_the_restricted_estimator(store):
    """``chi_at(..., "restricted")`` is ``restricted_chi_from_stats`` of the checkpoint's
    statistics with the stored χ's coordinates; the default is the stored two-run χ; an
    unknown estimator is an error naming the choices."""
    from patterning_core.estimators.susceptibility import restricted_chi_from_stats
    from patterning_core.sampling.config import ConfigError
    from patterning_core.store.chi_store import chi_at, read_stats

    step = CHECKPOINTS[1]
    stored, n_beta, ds = chi_at(store, step)
    np.testing.assert_array_equal(stored.values, ds["chi"].sel(checkpoint=step).values)
    restricted, _, _ = chi_at(store, step, "restricted")
    expected = restricted_chi_from_stats(read_stats(store, step))
    expected = expected.sel(component=stored.component.values).transpose(*stored.dims)
    np.testing.assert_allclose(restricted.values, expected.values)
    assert restricted.dims == stored.dims and restricted.coords.keys() == stored.coords.keys()
    assert not np.allclose(restricted.values, stored.values)
    assert restricted.attrs["estimator"].startswith("restricted") and n_beta == 30.0
    with pytest.raises(ConfigError, match="χ estimator must be one of"):
        chi_at(store, step, "full")
