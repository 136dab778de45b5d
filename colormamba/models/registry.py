"""Named presets of the generator and the one constructor, `build_model(name, **overrides)`.

A preset is a function returning only its deviations from `ModelConfig`'s defaults (the paper's
network); the caller's overrides win over the preset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from colormamba.models.config import ModelConfig
from colormamba.models.generator import ColorMamba

PresetFn = Callable[[], dict[str, Any]]
_PRESETS: dict[str, PresetFn] = {}


def register_preset(fn: PresetFn) -> PresetFn:
    """Register `fn` under its name as a preset (it returns ModelConfig fields that differ)."""
    if fn.__name__ in _PRESETS:
        raise ValueError(f"preset {fn.__name__!r} is already registered")
    _PRESETS[fn.__name__] = fn
    return fn


def list_presets() -> list[str]:
    """Names of the registered presets, sorted."""
    return sorted(_PRESETS)


@register_preset
def paper() -> dict[str, Any]:
    """The published network: 100,244,135 parameters, inputs padded to multiples of 256."""
    return {}


@register_preset
def small() -> dict[str, Any]:
    """A CPU-trainable middle ground: a quarter of the widths, six levels (multiples of 64)."""
    return {
        "rgb_width": 16,
        "rgb_max_width": 128,
        "rgb_levels": 6,
        "hsv_width": 8,
        "d_state": 8,
        "agent_heads": 4,
        "agent_num": 16,
        "spade_hidden": 32,
    }


@register_preset
def tiny() -> dict[str, Any]:
    """For tests and demos: narrow, five levels (multiples of 32), small state and few agents."""
    return {
        "rgb_width": 8,
        "rgb_max_width": 32,
        "rgb_levels": 5,
        "hsv_width": 4,
        "d_state": 4,
        "agent_heads": 2,
        "agent_num": 4,
        "mlp_ratio": 2.0,
        "spade_hidden": 8,
    }


def resolve_config(preset: str, **overrides: Any) -> ModelConfig:
    """The preset's config with `overrides` applied.

    Raises:
        ValueError: an unknown preset or override key (the known ones are listed), or an invalid value.
    """
    if preset not in _PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets: {list_presets()}")
    unknown = sorted(set(overrides) - set(ModelConfig.field_names()))
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; known keys: {ModelConfig.field_names()}")
    return ModelConfig(**{**_PRESETS[preset](), **overrides})


def build_model(preset: str, **overrides: Any) -> ColorMamba:
    """Build the generator of a named preset, e.g. `build_model("tiny", scan_backend="torch")`."""
    return ColorMamba(resolve_config(preset, **overrides))


def build_model_from_config(config: dict[str, Any]) -> ColorMamba:
    """Rebuild the generator from a resolved config dict, as stored in checkpoints."""
    return ColorMamba.from_config(config)
