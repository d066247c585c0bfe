"""Test-wide settings."""
import sys
from pathlib import Path

import pytest

# Tests mirror the source folders (tests/models/chameleon/ tests unifybench/models/chameleon/, ...); the
# fixtures and the fake judge server live in tests/helpers/ and import by module name under importlib mode.
sys.path.insert(0, str(Path(__file__).parent / "helpers"))


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


@pytest.fixture(scope="session")
def bench():
    """The bundled mini benchmark (read-only, so one instance serves every test)."""
    from unifybench.data.unifybench import UnifyBenchMini
    return UnifyBenchMini()


def pytest_collection_modifyitems(items):
    # Every test of a module that asks shared_data for ../shared is marked `shared`, so `.ci/run` can rerun
    # exactly those with UNIFYBENCH_SHARED_ROOT at an empty folder and prove they skip instead of failing.
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and any(getattr(v, "__module__", None) == "shared_data" for v in vars(module).values()):
            item.add_marker(pytest.mark.shared)
