"""Least-squares GAN losses: hand values and gradient routing with a tiny stand-in discriminator."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from colormamba.losses.adversarial import lsgan_discriminator_loss, lsgan_generator_loss


def test_generator_loss_hand_values() -> None:
    assert lsgan_generator_loss(torch.ones(2, 1, 4, 4)).item() == 0.0
    assert lsgan_generator_loss(torch.zeros(2, 1, 4, 4)).item() == 1.0
    both = [torch.zeros(2, 1, 4, 4), torch.full((2, 1, 3, 3), 0.5)]  # RGB and HSV discriminators
    assert lsgan_generator_loss(both).item() == pytest.approx(1.0 + 0.25)


def test_discriminator_loss_hand_values() -> None:
    ones, zeros = torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    assert lsgan_discriminator_loss(ones, zeros).item() == 0.0
    assert lsgan_discriminator_loss(zeros, ones).item() == 1.0
    half = torch.full((1, 1, 4, 4), 0.5)
    assert lsgan_discriminator_loss([half, zeros], [half, ones]).item() == pytest.approx(0.25 + 1.0)


def test_bad_discriminator_outputs_are_refused() -> None:
    with pytest.raises(ValueError, match="fake_outputs"):
        lsgan_generator_loss([])
    with pytest.raises(ValueError, match="real_outputs has 2"):
        lsgan_discriminator_loss([torch.ones(1)] * 2, [torch.ones(1)])


def test_gradients_reach_the_right_networks() -> None:
    torch.manual_seed(0)
    generator_out = torch.rand(2, 3, 16, 16, requires_grad=True)  # stands in for G's output
    disc = nn.Sequential(nn.Conv2d(3, 4, 4, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 4))
    real = torch.rand(2, 3, 16, 16)

    lsgan_generator_loss(disc(generator_out)).backward()
    assert generator_out.grad is not None and generator_out.grad.abs().sum() > 0

    generator_out.grad = None
    disc.zero_grad()
    lsgan_discriminator_loss(disc(real), disc(generator_out.detach())).backward()
    assert generator_out.grad is None
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in disc.parameters())
