"""A tiny conditional generator with StyleGAN's interface, for the adapter tests."""

import torch
from torch_utils import persistence
from torch_utils.ops import bias_act


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    """z and a one-hot class -> ws [B, num_ws, w_dim], truncated toward ``w_avg``.

    With ``per_class_w_avg`` the average is kept per class ([c_dim, w_dim], StyleGAN-XL);
    otherwise one average over all classes ([w_dim], StyleGAN2/3).
    """

    def __init__(self, z_dim, c_dim, w_dim, num_ws, per_class_w_avg):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.embed = torch.nn.Linear(c_dim, z_dim) if c_dim > 0 else None
        self.fc0 = torch.nn.Linear(z_dim * (2 if c_dim > 0 else 1), w_dim)
        self.fc1 = torch.nn.Linear(w_dim, w_dim)
        shape = [c_dim, w_dim] if per_class_w_avg and c_dim > 0 else [w_dim]
        self.register_buffer("w_avg", torch.zeros(shape))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None):
        x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
        if self.c_dim > 0:
            x = torch.cat([x, self.embed(c.to(x.dtype))], dim=1)
        x = bias_act.bias_act(self.fc0(x), act="lrelu")
        x = bias_act.bias_act(self.fc1(x), act="lrelu")
        ws = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            centre = self.w_avg[c.argmax(1)] if self.w_avg.ndim == 2 else self.w_avg
            centre = centre.reshape(-1, 1, self.w_dim)
            ws = centre + truncation_psi * (ws - centre)
        return ws


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """One style-modulated 3x3 convolution, a module of its own as in StyleGAN2/3 and StyleGAN-XL."""

    def __init__(self, w_dim, channels, img_resolution):
        super().__init__()
        self.style = torch.nn.Linear(w_dim, channels)
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.register_buffer("noise_const", torch.randn(1, 1, img_resolution, img_resolution))

    def forward(self, x, w, noise_mode="random", dtype=torch.float32):
        x = x * (1 + self.style(w)).unsqueeze(-1).unsqueeze(-1)
        x = torch.nn.functional.conv2d(x.to(dtype), self.conv.weight.to(dtype), self.conv.bias.to(dtype), padding=1)
        # StyleGAN3's and StyleGAN-XL's synthesis layers assert the dtype they chose, so
        # they fail under an enclosing autocast.
        assert x.dtype == dtype
        x = x.float()
        if noise_mode == "const":
            x = x + 0.1 * self.noise_const
        elif noise_mode == "random":
            x = x + 0.1 * torch.randn_like(x[:, :1])
        return bias_act.bias_act(x, act="lrelu")


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """ws -> images [B, 3, R, R] from a learned constant, one style-modulated conv layer per w."""

    def __init__(self, w_dim, num_ws, img_resolution, channels=8):
        super().__init__()
        self.w_dim, self.num_ws, self.img_resolution = w_dim, num_ws, img_resolution
        self.const = torch.nn.Parameter(torch.randn(channels, 4, 4))
        self.layers = torch.nn.ModuleList([SynthesisLayer(w_dim, channels, img_resolution) for _ in range(num_ws)])
        self.to_rgb = torch.nn.Conv2d(channels, 3, 1)

    def forward(self, ws, noise_mode="random", force_fp32=False):
        assert noise_mode in ("random", "const", "none")
        # Without force_fp32 the layers run in reduced precision, as StyleGAN's fp16 layers do.
        dtype = torch.float32 if force_fp32 else torch.bfloat16
        x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        x = torch.nn.functional.interpolate(x, size=self.img_resolution, mode="bilinear", align_corners=False)
        for w, layer in zip(ws.unbind(1), self.layers, strict=True):
            x = layer(x, w, noise_mode=noise_mode, dtype=dtype)
        return torch.tanh(self.to_rgb(x))


@persistence.persistent_class
class Generator(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, num_ws=3, per_class_w_avg=True):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.img_resolution = z_dim, c_dim, w_dim, img_resolution
        self.img_channels = 3
        self.num_ws = num_ws
        self.synthesis = SynthesisNetwork(w_dim, num_ws, img_resolution)
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, num_ws, per_class_w_avg)

    def forward(self, z, c, truncation_psi=1, noise_mode="random", force_fp32=False):
        ws = self.mapping(z, c, truncation_psi=truncation_psi)
        return self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32)
