"""Helpers shared by the command modules: option parsing and the user-error type."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import yaml

from blspeech.errors import UserError

__all__ = ["UserError", "count", "overrides", "positive", "shape"]


def shape(text: str) -> list[int]:
    """``C,H,W``-style comma-separated positive integers (an argparse ``type``)."""
    try:
        dims = [int(d) for d in text.split(",")]
    except ValueError as e:
        msg = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from e
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"dimensions must be positive, got {text!r}")
    return dims


def positive(text: str) -> int:
    """A positive integer (an argparse ``type``)."""
    return _int_at_least(text, 1, "a positive integer")


def count(text: str) -> int:
    """0 or a positive integer (an argparse ``type``)."""
    return _int_at_least(text, 0, "0 or a positive integer")


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def overrides(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are YAML scalars or lists (``2``, ``[2,1]``, ``bilinear``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out
