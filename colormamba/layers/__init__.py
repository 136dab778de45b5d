"""Building blocks of the ColorMamba networks, one concern per module."""

from colormamba.layers.agent_attention import AgentAttention, AgentBlock
from colormamba.layers.conv_blocks import ConvProjection, DoubleConv, UpConv
from colormamba.layers.criss_cross import CrissCrossAttention
from colormamba.layers.mlp import Mlp
from colormamba.layers.spade import SPADE, SPADEResBlock
from colormamba.layers.ss2d import SS2D
from colormamba.layers.vss import MambaIRBlock, VSSBlock

__all__ = [
    "SPADE",
    "SS2D",
    "AgentAttention",
    "AgentBlock",
    "ConvProjection",
    "CrissCrossAttention",
    "DoubleConv",
    "MambaIRBlock",
    "Mlp",
    "SPADEResBlock",
    "UpConv",
    "VSSBlock",
]
