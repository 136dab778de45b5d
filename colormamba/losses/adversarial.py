"""The `adversarial` term: least-squares GAN losses (Mao et al. 2017) for PatchGAN discriminators.

The reference trains two discriminators, one on RGB and one on HSV; each scores every patch of an image,
real = 1, fake = 0. These are pure functions of the discriminators' outputs; the networks come from
`colormamba.models.build_discriminator` and the training loop runs them. Losses of several
discriminators are summed, one term per discriminator as in two-discriminator GAN setups.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

REAL_LABEL = 1.0
FAKE_LABEL = 0.0

DiscriminatorOutputs = torch.Tensor | Sequence[torch.Tensor]


def _as_list(outputs: DiscriminatorOutputs, field: str) -> list[torch.Tensor]:
    items = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
    if not items:
        raise ValueError(f"{field}: at least one discriminator output is needed")
    return items


def lsgan_generator_loss(fake_outputs: DiscriminatorOutputs) -> torch.Tensor:
    """Generator side: push the discriminators' scores of generated images towards "real".

    Args:
        fake_outputs: one (B, 1, h, w) patch-score map per discriminator, computed on the generator's
            outputs without detaching them (the gradient must reach the generator).
    Returns:
        Scalar: sum over discriminators of mean((D(fake) - 1)^2).
    """
    fakes = _as_list(fake_outputs, "fake_outputs")
    total = torch.zeros((), device=fakes[0].device)
    for fake in fakes:
        total = total + (fake - REAL_LABEL).square().mean()
    return total


def lsgan_discriminator_loss(real_outputs: DiscriminatorOutputs,
                             fake_outputs: DiscriminatorOutputs) -> torch.Tensor:
    """Discriminator side: score real images 1 and generated ones 0.

    Args:
        real_outputs: one patch-score map per discriminator on real images.
        fake_outputs: the same discriminators on generated images, which the caller detaches so that
            this loss does not reach the generator. Same order and count as `real_outputs`.
    Returns:
        Scalar: sum over discriminators of 0.5 * (mean((D(real) - 1)^2) + mean(D(fake)^2)).
    """
    reals = _as_list(real_outputs, "real_outputs")
    fakes = _as_list(fake_outputs, "fake_outputs")
    if len(reals) != len(fakes):
        raise ValueError(f"real_outputs has {len(reals)} discriminator outputs, fake_outputs {len(fakes)}")
    total = torch.zeros((), device=reals[0].device)
    for real, fake in zip(reals, fakes, strict=True):
        total = total + 0.5 * ((real - REAL_LABEL).square().mean() + (fake - FAKE_LABEL).square().mean())
    return total
