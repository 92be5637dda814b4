"""Shell commands that are read from (``wav.scp`` and ``cmd |`` rxspecs): one switch, one timeout.

Every place that starts a command to read its output asks :func:`commands_allowed` first,
so ``BLSPEECH_NO_WAVSCP_COMMANDS=1`` (CLI: ``--no-wavscp-commands``) stops commands in
``wav.scp``, ``feats.scp``, ``cmvn.scp`` and ``ark:cmd |`` rspecifiers alike.
``BLSPEECH_PIPE_TIMEOUT=SECONDS`` kills a command that keeps its reader waiting that long.
"""

from __future__ import annotations

import os
import signal
import subprocess

from blspeech.errors import UserError

#: Environment variable that, set to a non-empty value other than ``0``, disables commands.
NO_COMMANDS_ENV = "BLSPEECH_NO_WAVSCP_COMMANDS"
#: Environment variable: seconds a reader waits for a command before killing it (unset: no
#: limit).
PIPE_TIMEOUT_ENV = "BLSPEECH_PIPE_TIMEOUT"


def commands_allowed(allow_commands: bool | None = None) -> bool:
    """May commands run? The env switch first, then ``allow_commands`` (None: yes)."""
    if os.environ.get(NO_COMMANDS_ENV, "") not in ("", "0"):
        return False
    return True if allow_commands is None else bool(allow_commands)


def commands_off(command: str) -> str:
    """The one message for a command that was not run because commands are disabled."""
    return (f"commands are disabled ({NO_COMMANDS_ENV}=1, --no-wavscp-commands or "
            f"allow_commands=False); not running: {command}; for data you trust, unset "
            f"{NO_COMMANDS_ENV} and drop --no-wavscp-commands")


def pipe_timeout() -> float | None:
    """Seconds from ``BLSPEECH_PIPE_TIMEOUT`` (None when unset, empty or 0)."""
    text = os.environ.get(PIPE_TIMEOUT_ENV, "").strip()
    try:
        seconds = float(text) if text else 0.0
        if not seconds >= 0:  # also NaN
            raise ValueError
    except ValueError as e:
        raise UserError(f"{PIPE_TIMEOUT_ENV}={text!r}: expected a number of seconds (0 or "
                        "unset: no timeout)") from e
    return seconds or None


def start(command: str, timeout: float | None, **kwargs) -> subprocess.Popen:
    """``Popen`` of a shell command; with a timeout in its own process group, so that
    :func:`kill` also stops what the shell started (``sleep`` in ``sleep 30 |``)."""
    return subprocess.Popen(command, shell=True, start_new_session=timeout is not None,
                            **kwargs)


def kill(proc: subprocess.Popen) -> None:
    """Kill a command from :func:`start` (its whole group when it has one)."""
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except ProcessLookupError:  # already gone
        pass
