"""diffusers networks (tiny configs, random weights, no download) under the registry's samplers, against three
references: k-diffusion's own wrapper of the same EPS network run through the sampler directly, diffusers'
own Euler loops (EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler), and the flow network's
velocity turned into x0 by hand. Skipped where diffusers is not installed."""
import pytest
import torch

from samplerlab.samplers import REGISTRY
from samplerlab.samplers.guidance import Interval, Pulse, ScheduledCFG
from samplerlab.schedulers import REGISTRY as SCHEDULES

diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install diffusers)")
from samplerlab.hosts import diffusers as host  # noqa: E402

STEPS = 6


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run 40x faster on one thread than on an oversubscribed shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4).eval()


@pytest.fixture(scope="module")
def transformer():
    torch.manual_seed(1)
    return diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
        caption_projection_dim=16, joint_attention_dim=8, pooled_projection_dim=8, out_channels=4).eval()


def ddpm(prediction_type="epsilon"):
    return diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                   prediction_type=prediction_type)


def noise_and_text(seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn([2, 4, 8, 8], generator=g), torch.randn([2, 5, 8], generator=g), torch.randn([2, 8], generator=g)


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("sampler,schedule", [("dpmpp_2m", "karras"), ("exp_multistep", "exponential"),
                                              ("poisson_flow", "karras"), ("heun", "linear_t")])
def test_eps_unet_matches_k_diffusion_wrapper(K, unet, sampler, schedule):
    """sample(pipe) == the registry sampler run directly on k-diffusion's DiscreteEpsDDPMDenoiser of the same UNet."""
    noise, text, _ = noise_and_text()
    scheduler = ddpm()
    pipe = type("Pipe", (), {"unet": unet, "scheduler": scheduler})()
    got = host.sample(pipe, noise, sampler=sampler, schedule=schedule, steps=STEPS, cond={"encoder_hidden_states": text},
                      seed=11)

    eps = lambda x, t, **kw: unet(x, t, return_dict=False, **kw)[0]  # noqa: E731
    wrapped = K.external.DiscreteEpsDDPMDenoiser(eps, scheduler.alphas_cumprod, quantize=False)
    sigmas = SCHEDULES[schedule].fn(STEPS, float(wrapped.sigma_min), float(wrapped.sigma_max)).float()
    ref = REGISTRY[sampler].fn(lambda x, s, seed=None: wrapped(x, s, encoder_hidden_states=text), noise * sigmas[0],
                               sigmas, extra_args={"seed": 11}, disable=True)
    assert rel(got, ref) < 1e-5


def test_eps_unet_euler_matches_diffusers_euler_loop(unet):
    """sl euler on EulerDiscreteScheduler's own Karras sigmas == diffusers' denoising loop with that scheduler."""
    noise, text, _ = noise_and_text(4)
    scheduler = diffusers.EulerDiscreteScheduler.from_config(ddpm().config, use_karras_sigmas=True)
    scheduler.set_timesteps(STEPS)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = unet(scheduler.scale_model_input(x, t), t, encoder_hidden_states=text, return_dict=False)[0]
        x = scheduler.step(eps, t, x, return_dict=False)[0]
    got = host.sample(None, noise, sampler="euler", sigmas=scheduler.sigmas, net=unet, scheduler=scheduler,
                      cond={"encoder_hidden_states": text})
    assert rel(got, x) < 1e-5


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_v_and_x0_networks(unet, prediction_type):
    """The V and x0 readings of the same network: D(x, sigma) by the formulas of the module docstring."""
    noise, text, _ = noise_and_text(5)
    d = host.Denoiser(unet, ddpm(prediction_type))
    sigma = torch.tensor([3.0, 0.4])
    s = sigma.reshape(-1, 1, 1, 1)
    x = noise * s
    out = unet(x / (s * s + 1).sqrt(), d.timestep(sigma).float(), encoder_hidden_states=text, return_dict=False)[0]
    want = x / (s * s + 1) - s * out / (s * s + 1).sqrt() if prediction_type == "v_prediction" else out
    torch.testing.assert_close(d(x, sigma, encoder_hidden_states=text), want, rtol=1e-5, atol=1e-5)


def test_flow_transformer_euler_matches_flow_match_euler_loop(transformer):
    """sl euler on FlowMatchEulerDiscreteScheduler's sigmas == diffusers' SD3-style loop (timestep = t * 1000)."""
    noise, text, pooled = noise_and_text(6)
    cond = {"encoder_hidden_states": text, "pooled_projections": pooled}
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(STEPS)
    x = noise.clone()
    for t in scheduler.timesteps:
        v = transformer(x, timestep=t.expand(x.shape[0]), return_dict=False, **cond)[0]
        x = scheduler.step(v, t, x, return_dict=False)[0]
    got = host.sample(None, noise, sampler="euler", sigmas=scheduler.sigmas, net=transformer, scheduler=scheduler, cond=cond)
    assert rel(got, x) < 1e-5


@pytest.mark.parametrize("sampler,schedule", [("dpmpp_2m", "karras"), ("exp_pc", "linear_t"), ("poisson_flow", "exponential")])
def test_flow_transformer_matches_direct_run(transformer, sampler, schedule):
    """sample(pipe) on a flow pipeline == the sampler run directly on x0 = x - t v(x, 1000 t), space flow."""
    noise, text, pooled = noise_and_text(7)
    cond = {"encoder_hidden_states": text, "pooled_projections": pooled}
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = type("Pipe", (), {"transformer": transformer, "scheduler": scheduler})()
    got = host.sample(pipe, noise, sampler=sampler, schedule=schedule, steps=STEPS, cond=cond, seed=5)

    def x0(x, t, seed=None):
        tt = t.reshape(-1, 1, 1, 1)
        return x - tt * transformer(x, timestep=t * 1000, return_dict=False, **cond)[0]

    sigmas = SCHEDULES[schedule].fn(STEPS, float(scheduler.sigmas[-1]), 1.0, space="flow").float()
    ref = REGISTRY[sampler].fn(x0, noise, sigmas, extra_args={"seed": 5}, disable=True, space="flow")
    assert rel(got, ref) < 1e-5


def test_guidance_constant_and_pulse(unet):
    """Constant guidance w is D_u + w (D_c - D_u); a Pulse schedule is samplerlab's ScheduledCFG on the same denoiser."""
    noise, text, _ = noise_and_text(8)
    empty = torch.zeros_like(text)
    pipe = type("Pipe", (), {"unet": unet, "scheduler": ddpm()})()
    args = dict(sampler="dpmpp_2m", schedule="karras", steps=STEPS, cond={"encoder_hidden_states": text},
                uncond={"encoder_hidden_states": empty})
    d = host.Denoiser(unet, pipe.scheduler)
    sigmas = SCHEDULES["karras"].fn(STEPS, d.sigma_min, d.sigma_max).float()

    def cfg(x, s, seed=None):
        dc, du = d(x, s, encoder_hidden_states=text), d(x, s, encoder_hidden_states=empty)
        return du + 4.0 * (dc - du)

    ref = REGISTRY["dpmpp_2m"].fn(cfg, noise * sigmas[0], sigmas, disable=True)
    assert rel(host.sample(pipe, noise, guidance=4.0, **args), ref) < 1e-5

    pulse = Pulse("gaussian", peak=6.0, base=1.0, width=0.7, center=2.0)
    guided = ScheduledCFG(lambda x, s, **e: d(x, s, encoder_hidden_states=text),
                          lambda x, s, **e: d(x, s, encoder_hidden_states=empty), pulse)
    ref = REGISTRY["dpmpp_2m"].fn(guided, noise * sigmas[0], sigmas, disable=True)
    got = host.sample(pipe, noise, guidance=pulse, **args)
    assert rel(got, ref) < 1e-5
    assert rel(got, host.sample(pipe, noise, guidance=Interval(6.0, 6.0), **args)) > 1e-3


def test_every_sampler_and_schedule_runs_on_both_networks(unet, transformer):
    """All registered samplers (default schedule) and all schedules (dpmpp_2m): finite latents of the input's shape."""
    noise, text, pooled = noise_and_text(9)
    eps_pipe = type("Pipe", (), {"unet": unet, "scheduler": ddpm()})()
    flow_pipe = type("Pipe", (), {"transformer": transformer, "scheduler": diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)})()
    runs = [(name, "karras") for name in sorted(REGISTRY)] + [("dpmpp_2m", name) for name in sorted(SCHEDULES)]
    for pipe, cond in ((eps_pipe, {"encoder_hidden_states": text}),
                       (flow_pipe, {"encoder_hidden_states": text, "pooled_projections": pooled})):
        for sampler, schedule in runs:
            out = host.sample(pipe, noise, sampler=sampler, schedule=schedule, steps=4, cond=cond)
            assert out.shape == noise.shape and bool(torch.isfinite(out).all()), (sampler, schedule)


def test_img2img_partial_denoise(unet):
    """init + denoise: the tail of the longer schedule, started from init + s0 noise."""
    noise, text, _ = noise_and_text(10)
    init = torch.randn_like(noise) * 0.5
    pipe = type("Pipe", (), {"unet": unet, "scheduler": ddpm()})()
    d = host.Denoiser(unet, pipe.scheduler)
    sigmas = SCHEDULES["karras"].fn(int(STEPS / 0.5), d.sigma_min, d.sigma_max)[-(STEPS + 1):].float()
    ref = REGISTRY["euler"].fn(lambda x, s, seed=None: d(x, s, encoder_hidden_states=text), init + sigmas[0] * noise,
                               sigmas, disable=True)
    got = host.sample(pipe, noise, sampler="euler", steps=STEPS, init=init, denoise=0.5, cond={"encoder_hidden_states": text})
    assert rel(got, ref) < 1e-5


def test_bad_input_names_the_parameter(unet):
    noise, text, _ = noise_and_text()
    pipe = type("Pipe", (), {"unet": unet, "scheduler": ddpm()})()
    with pytest.raises(ValueError, match="sampler must be one of"):
        host.sample(pipe, noise, sampler="nope")
    with pytest.raises(ValueError, match="schedule must be one of"):
        host.sample(pipe, noise, schedule="nope")
    with pytest.raises(ValueError, match="guidance must be"):
        host.sample(pipe, noise, guidance="strong", uncond={})
    with pytest.raises(ValueError, match="scheduler must be"):
        host.Denoiser(unet, object())
    with pytest.raises(ValueError, match="pipe must have"):
        host.sample(object(), noise)
