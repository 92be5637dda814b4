"""Model commands: ``list-models``, ``profile``."""

from __future__ import annotations

import argparse
import json

from blspeech.cli.common import UserError, overrides, shape


def cmd_list_models(args: argparse.Namespace) -> int:
    from blspeech.models import list_models, model_defaults

    for name in list_models():
        print(json.dumps({"name": name, **model_defaults(name)}) if args.verbose else name)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from blspeech.models import build_model
    from blspeech.models.profile import count

    options = overrides(args.set)
    for key in ("alpha", "beta"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    model = build_model(args.model, **options)
    torch.manual_seed(0)
    x = torch.randn(args.batch, *args.input_shape)
    try:
        stats = count(model, x, repeats=args.repeats)
    except RuntimeError as e:  # e.g. an input too small for the network's strides
        raise UserError(
            f"{args.model} cannot run on input {list(x.shape)}: {e}. Check --input-shape "
            "against the model (e.g. --set in_channels=1 for single-channel maps)."
        ) from e
    print(json.dumps({"model": args.model, "config": model.config, **stats}))
    return 0


def _add_list_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list-models", help="list registered model names",
                       description="List the names build_model() accepts.")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print each model's full default config as a JSON line")
    p.set_defaults(func=cmd_list_models)


def _add_profile(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--input-shape", type=shape, default=[3, 224, 224], metavar="C,H,W",
                   help="shape of one input without the batch axis (default: 3,224,224)")
    p.add_argument("--alpha", type=int, help="Little branch width divisor (default: model's)")
    p.add_argument("--beta", type=int, help="Little branch depth divisor (default: model's)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed forward passes; the median is reported (0: no timing)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any model option, e.g. --set num_classes=10 (repeatable)")
    p.set_defaults(func=cmd_profile)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``blspeech`` parser."""
    for add in (_add_list_models, _add_profile):
        add(sub)
