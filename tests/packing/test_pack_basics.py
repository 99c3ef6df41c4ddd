import numpy as np
import pytest

from packing import pack


def test_empty_gives_no_bins():
    r = pack([], 16)
    assert r.n_bins == 0 and r.assignment.size == 0 and r.stats.lower_bound == 0


@pytest.mark.parametrize("algorithm", ["bfd", "obfd", "ffd", "optimal"])
def test_small_example_every_algorithm(algorithm):
    r = pack([5, 4, 3, 2, 2], 8, algorithm)
    fills = sorted(r.fills.tolist())
    assert fills == [8, 8]
