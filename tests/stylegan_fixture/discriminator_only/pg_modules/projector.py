"""Stands for modules such as StyleGAN-XL's pg_modules and timm 0.4.12 feature networks."""

import torch


class FeatureProjector(torch.nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, channels, 3)
        self.activation = torch.nn.functional.gelu

    def forward(self, images):
        return self.activation(self.conv(images)).mean((2, 3))
