"""The prediction drafter: pointer walk, re-anchoring after edits, adaptive block length."""

from __future__ import annotations

import pytest

from vibekit.spec import PredictionDrafter, accept_greedy


def test_walks_the_prediction_while_output_agrees():
    d = PredictionDrafter(list(range(100)), num_draft_tokens=4, adaptive=False)
    assert d.propose([], 10) == [0, 1, 2, 3]
    d.update([0, 1, 2, 3], 4, [0, 1, 2, 3, 4])
    assert d.propose(list(range(5)), 10) == [5, 6, 7, 8]
    assert d.propose(list(range(5)), 2) == [5, 6]


def test_reanchors_after_a_replaced_line():
    pred = list(range(100))
    d = PredictionDrafter(pred, num_draft_tokens=8, adaptive=False, min_match=3)
    out = list(range(20))
    d.pos = 20
    # The model writes 3 new tokens instead of 20..24, then continues with 25, 26, 27.
    d.update([20, 21], 0, [500])
    assert d.propose(out + [500], 8) == []  # no anchor yet
    out += [500, 501, 502, 25, 26, 27]
    assert d.propose(out, 8) == list(range(28, 36))


def test_reanchor_prefers_the_occurrence_after_the_pointer():
    block = [7, 8, 9]
    pred = block + list(range(20, 40)) + block + list(range(50, 60))
    d = PredictionDrafter(pred, num_draft_tokens=4, adaptive=False)
    d.pos = 10
    d.aligned = False
    assert d.propose([1, 7, 8, 9], 4) == [50, 51, 52, 53]


def test_adaptive_block_grows_on_full_accept_and_shrinks_on_reject():
    d = PredictionDrafter(list(range(1000)), num_draft_tokens=8, max_draft_tokens=32)
    draft = d.propose([], 100)
    d.update(draft, len(draft), draft + [8])
    assert d.k == 16
    draft = d.propose(list(range(9)), 100)
    d.update(draft, 2, draft[:2] + [999])
    assert d.k == 4


def test_accept_greedy_is_the_longest_agreeing_prefix_plus_the_model_token():
    assert accept_greedy([1, 2, 3], [1, 2, 9, 4]) == [1, 2, 9]
    assert accept_greedy([1, 2, 3], [1, 2, 3, 4]) == [1, 2, 3, 4]
    assert accept_greedy([], [5]) == [5]
    assert accept_greedy([1], [0, 3]) == [0]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="num_draft_tokens"):
        PredictionDrafter([1], num_draft_tokens=0)
