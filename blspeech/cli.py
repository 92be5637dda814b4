"""``blspeech`` command line: a thin layer over library functions.

Each sub-command parses its options and calls one function of the library; results that
scripts read are printed as JSON. User mistakes end with one ``error:`` line and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from .errors import UserError

Handler = Callable[[argparse.Namespace], int]


def _shape(text: str) -> list[int]:
    try:
        dims = [int(d) for d in text.split(",")]
    except ValueError:
        msg = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"dimensions must be positive, got {text!r}")
    return dims


def _overrides(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are YAML scalars or lists (``2``, ``[2,1]``, ``bilinear``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def cmd_list_models(args: argparse.Namespace) -> int:
    from .models import list_models, model_defaults

    for name in list_models():
        print(json.dumps({"name": name, **model_defaults(name)}) if args.verbose else name)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from .models import build_model
    from .profile import count

    overrides = _overrides(args.set)
    for key in ("alpha", "beta"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    model = build_model(args.model, **overrides)
    torch.manual_seed(0)
    x = torch.randn(args.batch, *args.input_shape)
    try:
        stats = count(model, x, repeats=args.repeats)
    except RuntimeError as e:  # e.g. an input too small for the network's strides
        raise UserError(
            f"{args.model} cannot run on input {list(x.shape)}: {e}. Check --input-shape "
            "against the model (e.g. --set in_channels=1 for single-channel maps)."
        ) from None
    print(json.dumps({"model": args.model, "config": model.config, **stats}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blspeech",
        description="Big-Little Network acoustic models: models, profiling, training, decoding.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list-models", help="list registered model names",
                       description="List the names build_model() accepts.")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print each model's full default config as a JSON line")
    p.set_defaults(func=cmd_list_models)

    p = sub.add_parser(
        "profile",
        help="count parameters and MACs of a model and time its forward pass",
        description=(
            "Build MODEL from the registry and print one JSON object: params, macs "
            "(multiply-accumulates for the whole batch, counted by torch's flop counter), "
            "a breakdown into big / little / merge+fusion / other, and forward_ms, the median "
            "forward time on the CPU in eval mode."
        ),
        epilog="example: blspeech profile bl_resnet50 --input-shape 3,224,224 --batch 1",
    )
    p.add_argument("model", help="a registered model name (see 'blspeech list-models')")
    p.add_argument("--input-shape", type=_shape, default=[3, 224, 224], metavar="C,H,W",
                   help="shape of one input without the batch axis (default: 3,224,224)")
    p.add_argument("--alpha", type=int, help="Little branch width divisor (default: model's)")
    p.add_argument("--beta", type=int, help="Little branch depth divisor (default: model's)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed forward passes; the median is reported (0: no timing)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any model option, e.g. --set num_classes=10 (repeatable)")
    p.set_defaults(func=cmd_profile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UserError, ValueError, FileNotFoundError) as e:
        # Library functions raise these for bad user input; show the message, not a trace.
        print(f"blspeech {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
