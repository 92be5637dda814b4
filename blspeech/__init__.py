"""blspeech: Big-Little Network acoustic models for speech recognition.

``blspeech.load_bundle(path)`` loads a trained model for use in other code (see
:mod:`blspeech.bundle`); the rest lives in the subpackages.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_BUNDLE_NAMES = ("Bundle", "load_bundle", "make_bundle")


def __getattr__(name: str) -> Any:
    # Lazy: 'import blspeech' stays cheap (no torch) until a bundle is wanted.
    if name in _BUNDLE_NAMES:
        from . import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module 'blspeech' has no attribute {name!r}")


__all__ = ["__version__", *_BUNDLE_NAMES]
