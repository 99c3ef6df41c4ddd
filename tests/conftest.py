"""Suite-wide isolation: no test sees a torch thread count that another test set."""
from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch intra-op thread for every test, restored afterwards.

    ``Trainer`` applies ``train.threads`` process-wide (``torch.set_num_threads``), so without
    this every later test ran with the thread count of the last training test. The tests' models
    and tensors are tiny: a second thread only spin-waits (3x slower on a busy 2-core machine),
    and with one thread a result does not depend on the machine's core count.
    """
    torch = sys.modules.get("torch")  # imported by the test modules that use it, at collection
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
