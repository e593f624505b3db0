"""The conventions proved against k-diffusion itself: same samplers, same numbers, same model wrappers."""
import pytest
import torch

from samplerlab.lab import problems
from samplerlab.samplers import REGISTRY
from samplerlab.schedulers import REGISTRY as SCHEDULERS

TWINS = {"euler": "sample_euler", "heun": "sample_heun", "dpmpp_2m": "sample_dpmpp_2m"}


@pytest.mark.parametrize("problem", ["gaussian", "mixture", "field"])
@pytest.mark.parametrize("schedule", ["karras", "exponential"])
@pytest.mark.parametrize("name", sorted(TWINS))
def test_agrees_with_k_diffusion(K, name, schedule, problem):
    p = problems.make(problem)
    x = p.draw(range(3), "ve", 80.0)[0].float()
    sigmas = SCHEDULERS[schedule].fn(10, 0.002, 80.0).float()
    ours = REGISTRY[name].fn(p.model(), x, sigmas, disable=True)
    theirs = getattr(K.sampling, TWINS[name])(p.model(), x, sigmas, disable=True)
    assert ((ours - theirs).norm() / theirs.norm()) < 1e-5


def test_karras_and_exponential_match_k_diffusion(K):
    for name, twin in (("karras", K.sampling.get_sigmas_karras), ("exponential", K.sampling.get_sigmas_exponential)):
        torch.testing.assert_close(SCHEDULERS[name].fn(12, 0.03, 14.6).float(), twin(12, 0.03, 14.6), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("problem", ["gaussian", "field", "mixture_cond"])
def test_problem_through_k_diffusion_vdenoiser(K, problem):
    """The exact v-network wrapped by k-diffusion's VDenoiser is the problem's exact denoiser."""
    p = problems.make(problem)
    x, labels = p.draw(range(2), "ve", 5.0)
    sigma = torch.tensor([5.0, 0.3], dtype=torch.float64)
    wrapped = K.external.VDenoiser(p.v_network())
    extra = {"labels": labels} if labels is not None else {}
    torch.testing.assert_close(wrapped(x, sigma, **extra), p.model("ve", labels)(x, sigma), rtol=1e-9, atol=1e-9)
