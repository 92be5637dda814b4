"""blspeech models: the Big-Little module, residual blocks, backbones and the registry.

This package imports nothing from training, decoding or the CLI, so it can be vendored
into other pipelines on its own.
"""

from blspeech.models import speech, vision  # noqa: F401  (register the speech and vision models)
from blspeech.models.big_little import BigLittleModule
from blspeech.models.blocks import BasicBlock, Bottleneck, SqueezeExcite, make_stage
from blspeech.models.bn_fold import fuse
from blspeech.models.registry import (
    build_model,
    build_model_from_config,
    list_models,
    model_defaults,
    register_model,
)

__all__ = [
    "BasicBlock",
    "BigLittleModule",
    "Bottleneck",
    "SqueezeExcite",
    "build_model",
    "build_model_from_config",
    "fuse",
    "list_models",
    "make_stage",
    "model_defaults",
    "register_model",
]
