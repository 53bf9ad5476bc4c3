"""The counting readout (``experiments/spacing/counting.py``) on hand-made outline text whose
runs, markers and losses are known."""

from __future__ import annotations

import numpy as np

from patterning_core.data.outline import MARKERS
from patterning_core.experiments.spacing.counting import (
    counting_losses,
    counting_targets,
    run_lengths,
)

# token ids: 0 "\n", 1 " ", 2 "a", then the markers
STRINGS = ["\n", " ", "a", *MARKERS]
NL, SP, A = 0, 1, 2


def marker(depth: int) -> int:
    return 3 + depth


def test_run_lengths_count_the_spaces_right_before_each_token():
    row = np.array([[SP, SP, A, NL, SP, SP, marker(2), A]])
    # the first run reaches the start of the sequence: its length is unknown (-1)
    np.testing.assert_array_equal(run_lengths(row, SP), [[-1, -1, -1, 0, 0, 1, 2, 0]])


def test_markers_after_their_own_run_and_spaces_that_continue_a_run():
    row = np.array([[NL, SP, SP, marker(2), A, NL, SP, marker(3), NL, SP, SP, SP, marker(3)]])
    t = counting_targets(row, STRINGS)
    # targets are row[:, 1:]; the marker after 2 spaces names 2, the one after 1 space names
    # 3 (not its own run: not counted), the last one after 3 spaces names 3
    np.testing.assert_array_equal(np.flatnonzero(t["marker"][0]), [2, 11])
    np.testing.assert_array_equal(t["depth"][0][[2, 6, 11]], [2, 3, 3])
    # a space continuing a run: the second space of each run of two or more
    np.testing.assert_array_equal(np.flatnonzero(t["in_run"][0]), [1, 9, 10])
    loss = np.arange(12, dtype=np.float64)[None]  # loss of unit j is j
    out = counting_losses(loss, t)
    assert out["marker"] == {2: [2.0, 1], 3: [11.0, 1]}
    assert out["space"] == {1: [5.0, 2], 2: [10.0, 1]}
    assert out["marker_all"] == 6.5 and out["space_all"] == (1 + 9 + 10) / 3
    assert out["space_after_1_2"] == (1 + 9 + 10) / 3 and np.isnan(out["space_after_3_plus"])
    deep = np.array([[NL, SP, SP, SP, SP, marker(4)]])  # units 1-3 continue the run
    out = counting_losses(np.arange(5, dtype=np.float64)[None], counting_targets(deep, STRINGS))
    assert out["space_after_1_2"] == (1 + 2) / 2 and out["space_after_3_plus"] == 3.0
