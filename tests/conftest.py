"""Test-wide settings."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # The tiny models are per-op overhead: on 2 shared cores a second thread makes them ~3x slower.
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
