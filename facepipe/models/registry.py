"""Architectures as data: a name maps to a builder, so configs and checkpoints can name a model."""
from __future__ import annotations

from typing import Callable

from torch import nn

from facepipe.util.errors import FacepipeError

Builder = Callable[..., nn.Module]


class ModelSettingsError(FacepipeError, ValueError):
    """Settings a model's builder refuses: one line on the CLI, still a ValueError to API callers."""
_BUILDERS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator for `build(num_classes, in_channels=3, **kw) -> nn.Module`."""

    def add(builder: Builder) -> Builder:
        # A silent overwrite would make a checkpoint rebuild a different network.
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return add


def list_models() -> list[str]:
    return sorted(_BUILDERS)


def default_in_channels(name: str) -> int:
    """The input a registered model is benchmarked and listed with: the paper's parsers take RGB + the
    landmark heatmap (4), BiSeNet as users run it takes RGB (3)."""
    return 3 if name.startswith("bisenet") else 4


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build a registered model; `create_model(m.arch, **m.config)` rebuilds `m`."""
    if name not in _BUILDERS:
        raise FacepipeError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    try:
        model = _BUILDERS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
    except (TypeError, ValueError) as e:  # a setting the builder does not take, or a value it refuses
        raise ModelSettingsError(f"model {name!r} refuses the settings {kwargs}: {e}") from None
    model.arch = name
    return model
