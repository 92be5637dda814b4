"""``blspeech`` command line: a thin layer over library functions.

Each sub-command parses its options and calls one function of the library; results that
scripts read are printed as JSON. User mistakes (:class:`~blspeech.errors.UserError`) end
with one ``error:`` line and exit code 2 (``--debug`` or ``BLSPEECH_DEBUG=1``: with their
traceback), and so does an ``OSError`` naming a file (a path that cannot be read or
written); any other exception is a bug of ours and shows its traceback. Commands live
in one module per area (``models``, ...), each with a ``register(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Iterator, Sequence

from blspeech.errors import UserError

#: Modules of this package that add sub-commands, in ``--help`` order.
COMMAND_MODULES = ("models", "data", "features", "score", "train", "asr", "wfst", "gmm",
                   "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blspeech",
        description="Big-Little Network acoustic models: models, profiling, training, decoding.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of user errors too (as BLSPEECH_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


@contextlib.contextmanager
def _commands_switch(off: bool) -> Iterator[None]:
    """``--no-wavscp-commands`` as ``BLSPEECH_NO_WAVSCP_COMMANDS=1`` for the command's run:
    one switch for every command read from (wav.scp, feats.scp, cmvn.scp, ``ark:... |``),
    data-loading workers included; restored afterwards for in-process callers."""
    name = "BLSPEECH_NO_WAVSCP_COMMANDS"  # blspeech.io.kaldi.pipes.NO_COMMANDS_ENV (fast import)
    if not off:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _debug(args: argparse.Namespace) -> bool:
    return bool(args.debug) or os.environ.get("BLSPEECH_DEBUG", "") not in ("", "0")


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader went away (`blspeech score ... | head`): stop quietly, as Unix tools do.
        # stdout is pointed at devnull so that the interpreter's final flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        if e.filename is None:
            raise
        # A path the user named that cannot be read or written (missing, a directory,
        # no permission, disk full): theirs to fix.
        raise UserError(f"{e.filename}: {e.strerror or e}") from e


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _commands_switch(getattr(args, "no_wavscp_commands", False)):
            return _run(args)
    except UserError as e:
        # A user mistake: the message says what and where. Anything else is our bug and
        # keeps its traceback.
        if _debug(args):
            raise
        print(f"blspeech {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
