"""A discriminator that depends on a module only the training environment had."""

import torch
from pg_modules.projector import FeatureProjector
from torch_utils import persistence


@persistence.persistent_class
class DiscriminatorHead(torch.nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.out = torch.nn.Linear(channels, 1)

    def forward(self, features):
        return self.out(features)


class Discriminator(torch.nn.Module):
    """Pickled by reference, like StyleGAN-XL's projected discriminator."""

    def __init__(self, channels=8):
        super().__init__()
        self.projector = FeatureProjector(channels)
        self.head = DiscriminatorHead(channels)

    def forward(self, images):
        return self.head(self.projector(images))
