"""Model registry: names -> factory functions, and configs as plain dicts.

Every model built through :func:`build_model` carries ``model.config``, a plain dict of
JSON-friendly values (``{"name": ..., **kwargs}``) from which :func:`build_model_from_config`
rebuilds the same architecture. Checkpoints store that dict next to the weights.

Example:
    >>> from blspeech.models import build_model, build_model_from_config
    >>> m = build_model("bl_resnet50", num_classes=10)
    >>> m.config["num_classes"]
    10
    >>> m2 = build_model_from_config(m.config)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from blspeech.errors import UserError

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {}


def register_model(name: str, builder: Callable[..., nn.Module], **defaults: Any) -> None:
    """Register ``builder`` under ``name``; ``defaults`` are the keyword arguments it gets.

    The defaults are the model's full config: every key can be overridden in
    :func:`build_model`, and nothing outside them is accepted. One builder can back a
    family of names (``bl_resnet50``, ``bl_resnext50_32x4d``, ...) with different defaults.
    """
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = (builder, {k: _plain(v) for k, v in defaults.items()})


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def model_defaults(name: str) -> dict[str, Any]:
    """The full config of ``build_model(name)`` without overrides (a copy)."""
    return dict(_get(name)[1])


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` replace the factory's defaults.

    Unknown option names raise ``ValueError`` listing the accepted ones.
    """
    defaults = model_defaults(name)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise UserError(
            f"model {name!r} has no option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(defaults))}"
        )
    config = {**defaults, **{k: _plain(v) for k, v in overrides.items()}}
    model = _get(name)[0](**config)
    model.config = {"name": name, **config}
    return model


def build_model_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from ``model.config`` (as stored in checkpoints)."""
    if "name" not in config:
        raise UserError("model config has no 'name' key")
    options = {k: v for k, v in config.items() if k != "name"}
    return build_model(config["name"], **options)


def _get(name: str) -> tuple[Callable[..., nn.Module], dict[str, Any]]:
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def _plain(value: Any) -> Any:
    # Tuples become lists so configs survive JSON/YAML round trips unchanged.
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
