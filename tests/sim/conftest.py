"""Fixtures for the simulator tests (opt in with ``pytestmark = pytest.mark.usefixtures(...)``)."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: a second OpenMP thread costs more than it gives, and on a shared runner a
    descheduled one stalls every parallel op. Restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
