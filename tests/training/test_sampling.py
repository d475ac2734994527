"""Mixing fully and partially labelled cases in training."""

from __future__ import annotations

import pytest
import torch

from scripts.errors import InputError
from scripts.training.sampling import mixed_sampler

ENTRIES = [{"id": f"p{i}"} for i in range(8)] + [{"id": "real", "annotated": [4, 8]}]


def test_partial_fraction_sets_the_share_of_steps_from_partial_cases():
    sampler = mixed_sampler(ENTRIES, 0.5)
    torch.manual_seed(0)
    draws = [i for _ in range(400) for i in sampler]
    assert len(draws) == 400 * len(ENTRIES)
    assert draws.count(8) / len(draws) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("entries, fraction", [(ENTRIES, None), (ENTRIES[:8], 0.5)])
def test_without_a_fraction_or_a_second_group_cases_are_shuffled_plainly(entries, fraction):
    assert mixed_sampler(entries, fraction) is None


def test_fraction_outside_zero_one_is_refused():
    for fraction in (0, 1.0):  # the option's rule, checked before any work, has the same range
        with pytest.raises(
            InputError, match=f"--partial_fraction {fraction}: expected null or a number strictly between 0 and 1"
        ):
            mixed_sampler(ENTRIES, fraction)


def test_partial_ids_choose_whose_share_is_set_even_when_phantoms_are_partial_too():
    entries = ENTRIES + [{"id": "anatomy", "annotated": [1, 3, 4, 5, 7, 8]}]
    sampler = mixed_sampler(entries, 0.25, partial_ids=["real"])
    torch.manual_seed(0)
    draws = [i for _ in range(400) for i in sampler]
    assert draws.count(8) / len(draws) == pytest.approx(0.25, abs=0.02)
    assert draws.count(9) / len(draws) == pytest.approx(0.75 / 9, abs=0.01)
