"""Reference models as real ComfyUI MODELs (a weight-free `comfy.model_base.BaseModel` in a `ModelPatcher`,
EPS or FLOW), their conditioning and their decoder, so every sampler, scheduler and guider can run, and be
A/B-tested, against a model with a known answer without a checkpoint (lab/reference_models.py).

The network receives what ComfyUI gives any UNet: xc = calculate_input(sigma, x) (EPS: x / sqrt(sigma^2 + 1);
FLOW: x), the conditioning as `context` and the levels in transformer_options["sigmas"]; it returns the
prediction that `calculate_denoised` turns back into the reference x0: (x - x0) / sigma for both kinds.
Conditioning: a one-hot [1, 1, classes + 1] tensor, the last slot the null label.

Node ids `SamplerLabReferenceModel`, `SamplerLabReferenceCondition`, `SamplerLabReferenceLatent`,
`SamplerLabReferenceDecode` are a compatibility promise."""
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.supported_models_base
import torch
from comfy_api.latest import io

from ..lab import reference_models
from .generated import CATEGORY
from .widgets import schema

VARIANTS = {"eps": comfy.model_base.ModelType.EPS, "flow": comfy.model_base.ModelType.FLOW}


def latent_size_hint(shape):
    c, h, w = shape
    return f"EmptyLatentImage width {8 * w}, height {8 * h} gives it ({c} channel{'s' * (c > 1)} filled in by the sampler)"


class ReferenceNet(torch.nn.Module):
    """The diffusion_model of a reference MODEL: no weights, the prediction of a lab reference model."""

    def __init__(self, reference, flow, device=None, operations=None, **unet_extra):
        super().__init__()
        self.reference, self.flow = reference, flow
        self.spec = reference_models.spec(reference)
        self.dtype = torch.float32

    def labels(self, context, batch):
        if context is None:
            return None
        k = self.spec.classes + 1
        if context.shape[-1] != k:
            raise ValueError(f"reference model {self.reference!r} reads a Reference condition made for it "
                             f"(width {k}), got conditioning of shape {list(context.shape)}")
        labels = context.reshape(context.shape[0], -1, k)[:, 0].argmax(-1)
        return labels.repeat(batch // labels.shape[0]).cpu()

    def forward(self, xc, t, context=None, transformer_options={}, **kwargs):
        c, h, w = self.spec.shape
        if xc.ndim != 4 or tuple(xc.shape[1:]) != self.spec.shape:
            raise ValueError(f"reference model {self.reference!r} takes latents of shape [B, {c}, {h}, {w}] "
                             f"({latent_size_hint(self.spec.shape)}), got {list(xc.shape)}")
        sigma = transformer_options["sigmas"].reshape(-1).to(torch.float64).cpu()
        sigma = sigma.repeat(xc.shape[0] // sigma.shape[0])
        b = sigma.view(-1, 1, 1, 1)
        x = xc.to(torch.float64).cpu()
        x = x if self.flow else x * (b ** 2 + 1).sqrt()
        x0 = reference_models.predict(self.reference, x, sigma, self.labels(context, xc.shape[0]), "flow" if self.flow else "ve")
        return ((x - x0) / b).to(xc.device, xc.dtype)


def latent_format(channels):
    """A LatentFormat whose latent is the image itself in [-1, 1] (previews map it to [0, 1])."""
    rgb = [[0.5, 0.5, 0.5]] if channels == 1 else [[0.5 * (i == j) for j in range(3)] for i in range(channels)]
    return type(f"Reference{channels}ch", (comfy.latent_formats.LatentFormat,),
                {"latent_channels": channels, "latent_rgb_factors": rgb, "latent_rgb_factors_bias": [0.5, 0.5, 0.5]})


def reference_model(name, variant="eps"):
    """A ModelPatcher around a weight-free BaseModel predicting the reference model `name`."""
    spec = reference_models.spec(name)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    flow = variant == "flow"

    class Config(comfy.supported_models_base.BASE):
        unet_config = {"reference": name, "flow": flow}
        unet_extra_config = {}
        latent_format = latent_format(spec.shape[0])
        sampling_settings = {"shift": 1.0} if flow else {}
        memory_usage_factor = 0.01

    device = torch.device("cpu")
    base = comfy.model_base.BaseModel(Config(Config.unet_config), model_type=VARIANTS[variant], device=device, unet_model=ReferenceNet)
    return comfy.model_patcher.ModelPatcher(base, load_device=device, offload_device=device)


def reference_of(model):
    """The ReferenceNet inside a MODEL made by the Reference model node (ValueError for any other)."""
    net = getattr(getattr(model, "model", None), "diffusion_model", None)
    if not isinstance(net, ReferenceNet):
        raise ValueError("model: a MODEL from the Reference model node is required")
    return net


def one_hot(label, classes):
    v = torch.zeros(1, 1, classes + 1)
    v[..., label] = 1.0
    return [[v, {}]]


class ReferenceModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        names = list(reference_models.REGISTRY)
        return schema(
            node_id="SamplerLabReferenceModel",
            display_name="Reference model",
            category=f"{CATEGORY}/reference",
            description="A MODEL with a known answer and no weights: " + "; ".join(
                f"{s.name}: {s.summary}, latent {list(s.shape)}" for s in reference_models.REGISTRY.values())
                + ". Use EmptyLatentImage at 8x the latent size, Reference condition for the conditioning and "
                  "Reference decode for pictures.",
            search_aliases=["known answer", "ELS", "digits", "analytic model", "test model"],
            inputs=[io.Combo.Input("reference", options=names, default=names[0],
                                   tooltip="Which lab model answers: a model with a known (exact or reference) solution."),
                    io.Combo.Input("variant", options=list(VARIANTS), default="eps",
                                   tooltip="eps: a VE/EPS model (SD-style sigmas); flow: rectified flow (CONST, t in [0, 1]), "
                                           "the same model by the exact change of variables.")],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, reference, variant) -> io.NodeOutput:
        return io.NodeOutput(reference_model(reference, variant))


class ReferenceCondition(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SamplerLabReferenceCondition",
            display_name="Reference condition",
            category=f"{CATEGORY}/reference",
            description="Class label -> positive CONDITIONING (that class) and negative (the null label), read by the "
                        "Reference model: CFG, guiders and guidance pulses work unchanged. label -1: unconditional.",
            inputs=[io.Model.Input("model", tooltip="A Reference model: the condition is read by it only."),
                    io.Int.Input("label", default=0, min=-1, max=999, tooltip="Class index; -1 for unconditional.")],
            outputs=[io.Conditioning.Output("positive", display_name="positive"),
                     io.Conditioning.Output("negative", display_name="negative")],
        )

    @classmethod
    def execute(cls, model, label) -> io.NodeOutput:
        spec = reference_of(model).spec
        if label != -1 and not 0 <= label < spec.classes:
            allowed = f"0..{spec.classes - 1} or -1 (unconditional)" if spec.classes else "-1 (the model is unconditional)"
            raise ValueError(f"label must be {allowed} for reference model {spec.name!r}, got {label}")
        null = one_hot(spec.classes, spec.classes)
        return io.NodeOutput(null if label == -1 else one_hot(label, spec.classes), null)


class ReferenceLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SamplerLabReferenceLatent",
            display_name="Reference latent",
            category=f"{CATEGORY}/reference",
            description="An empty LATENT of the Reference model's exact shape (EmptyLatentImage at 8x the size works "
                        "with the samplers too, but not with nodes that call the model before the sampler fixes channels).",
            inputs=[io.Model.Input("model", tooltip="A Reference model: the latent gets its exact shape."),
                    io.Int.Input("batch_size", default=1, min=1, max=4096, tooltip="Latents in the batch.")],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, model, batch_size) -> io.NodeOutput:
        return io.NodeOutput({"samples": torch.zeros(batch_size, *reference_of(model).spec.shape)})


class ReferenceDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return schema(
            node_id="SamplerLabReferenceDecode",
            display_name="Reference decode",
            category=f"{CATEGORY}/reference",
            description="A reference model's latent is its image in [-1, 1]: mapped to [0, 1], grey to RGB, enlarged "
                        "`scale` times (nearest), for previews, grids and Save Image.",
            inputs=[io.Latent.Input("samples", tooltip="Latents of a Reference model (its image space: decoding is a rescale)."),
                    io.Int.Input("scale", default=8, min=1, max=64, tooltip="Enlargement factor (nearest neighbour).")],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, samples, scale) -> io.NodeOutput:
        return io.NodeOutput(decode(samples["samples"], scale))


def decode(x, scale=1):
    """[B, C, H, W] latents in [-1, 1], C = 1 or 3 -> IMAGE [B, H s, W s, 3] in [0, 1]."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"samples: reference latents of shape [B, 1 or 3, H, W] expected, got {list(x.shape)}")
    img = ((x.float() + 1) / 2).clamp(0, 1).expand(-1, 3, -1, -1)
    img = torch.nn.functional.interpolate(img, scale_factor=scale, mode="nearest") if scale > 1 else img
    return img.permute(0, 2, 3, 1).contiguous()


NODES = [ReferenceModel, ReferenceCondition, ReferenceLatent, ReferenceDecode]
