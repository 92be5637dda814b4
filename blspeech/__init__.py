"""blspeech: Big-Little Network acoustic models for speech recognition.

``blspeech.load_bundle(path)`` loads a trained model for use in other code (a
:class:`~blspeech.inference.model.Bundle`, see :mod:`blspeech.inference.bundle`); the rest
lives in the subpackages.
"""

from __future__ import annotations

import os
from typing import Any

# oneDNN (PyTorch's CPU convolutions) caches 1024 primitives by default. A speech batch of a
# new time length needs a new primitive per convolution and pass, so training over a few
# dozen lengths overflows that cache and rebuilds primitives on every batch (measured with
# ONEDNN_VERBOSE: 17% of the ResNet's and 28% of the bL-ResNet's executions were misses on a
# second pass over 30 lengths; none with 16384). oneDNN reads this when it first builds a
# primitive, so it works as long as no convolution ran before blspeech was imported.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16384")

__version__ = "0.1.0"

_BUNDLE_NAMES = ("Bundle", "load_bundle", "make_bundle")


def __getattr__(name: str) -> Any:
    # Lazy: 'import blspeech' stays cheap (no torch) until a bundle is wanted.
    if name in _BUNDLE_NAMES:
        from blspeech.inference import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module 'blspeech' has no attribute {name!r}")


__all__ = ["__version__", *_BUNDLE_NAMES]
