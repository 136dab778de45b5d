"""Agent attention's position biases and the criss-cross attention against brute force."""

from __future__ import annotations

import torch

from colormamba.layers import AgentAttention, CrissCrossAttention


def test_agent_biases_read_the_grid_centre() -> None:
    torch.manual_seed(0)
    attn = AgentAttention(16, num_heads=8, num_agents=49)
    agent_bias, query_bias = attn.position_biases()
    expected_agent = attn.an_bias[:, :, 3, 3] + attn.ah_bias[..., 0] + attn.aw_bias[..., 0]
    expected_query = attn.na_bias[:, :, 3, 3] + attn.ha_bias[:, 0] + attn.wa_bias[:, 0]
    torch.testing.assert_close(agent_bias[..., 0], expected_agent)
    torch.testing.assert_close(query_bias[:, 0], expected_query)


def test_agent_bias_gradients() -> None:
    """Only the query-side bias matters; the agent-side one cancels in its softmax."""
    torch.manual_seed(0)
    attn = AgentAttention(16, num_heads=4, num_agents=9)
    out = attn(torch.randn(2, 5, 6, 16))
    assert out.shape == (2, 5, 6, 16)
    (out * torch.randn_like(out)).sum().backward()
    for name in ("an_bias", "ah_bias", "aw_bias"):
        assert torch.allclose(getattr(attn, name).grad, torch.zeros(()), atol=1e-6), name
    for name in ("ha_bias", "wa_bias"):
        assert getattr(attn, name).grad.abs().sum() > 0, name
    na_grad = attn.na_bias.grad
    assert na_grad[:, :, 1, 1].abs().sum() > 0  # the centre of the 3x3 grid is the effective bias
    na_grad[:, :, 1, 1] = 0
    assert na_grad.abs().sum() == 0


def test_agent_attention_is_per_image() -> None:
    torch.manual_seed(0)
    attn = AgentAttention(8, num_heads=2, num_agents=4)
    x = torch.randn(3, 4, 4, 8)
    torch.testing.assert_close(attn(x)[1:2], attn(x[1:2]))


def _criss_cross_brute_force(m: CrissCrossAttention, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    q, k, v = m.query_conv(x), m.key_conv(x), m.value_conv(y)
    out = torch.zeros_like(v)
    _, _, height, width = x.shape
    for i in range(height):
        for j in range(width):
            # the pixel's column (without itself), then its row (with itself)
            keys = [(r, j) for r in range(height) if r != i] + [(i, c) for c in range(width)]
            energy = torch.stack([(q[:, :, i, j] * k[:, :, r, c]).sum(1) for r, c in keys], dim=1)
            weights = torch.softmax(energy, dim=1)  # (B, H - 1 + W)
            values = torch.stack([v[:, :, r, c] for r, c in keys], dim=2)  # (B, C, H - 1 + W)
            out[:, :, i, j] = (values * weights.unsqueeze(1)).sum(2)
    return m.gamma * out + m.conv_skip(torch.cat([x, y], dim=1))


def test_criss_cross_matches_brute_force() -> None:
    torch.manual_seed(0)
    m = CrissCrossAttention(16, 3).eval()
    with torch.no_grad():
        m.gamma.fill_(0.7)  # starts at 0; make the attention part count
    x, y = torch.randn(2, 16, 4, 5), torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(m(x, y), _criss_cross_brute_force(m, x, y), rtol=1e-4, atol=1e-5)


def test_criss_cross_starts_as_its_skip_path() -> None:
    torch.manual_seed(0)
    m = CrissCrossAttention(16, 3).eval()
    x, y = torch.randn(1, 16, 4, 5), torch.randn(1, 3, 4, 5)
    assert m.gamma.item() == 0
    torch.testing.assert_close(m(x, y), m.conv_skip(torch.cat([x, y], dim=1)))
