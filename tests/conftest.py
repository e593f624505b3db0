import pytest
import torch

from samplerlab.lab import kdiffusion


@pytest.fixture(scope="session")
def K():
    """k-diffusion's sampling/external modules (skips where k-diffusion is not installed)."""
    k = kdiffusion.load()
    if k is None:
        pytest.skip("k-diffusion is not installed")
    return k


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield
