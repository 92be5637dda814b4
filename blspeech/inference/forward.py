"""Acoustic-model outputs for Kaldi decoders: ``blspeech forward``.

:func:`forward_data_dir` runs a trained model over a data dir and writes one float matrix
per utterance (output frames x pdfs) in Kaldi's binary ``FM`` format, the input of
``latgen-faster-mapped``, ``decode-faster-mapped`` or ``copy-matrix``. For a hybrid model
the values are scaled log-likelihoods, ``log p(s|x) - prior_scale * log p(s)``, with the
log-priors stored in the model (estimated from the training alignments); for a CTC model
the log-probabilities of the tokens.

The output goes where a Kaldi wspecifier says:

* ``ark:-``: standard output, one utterance at a time, for a pipe::

      blspeech forward exp/hybrid/final.pt data/test ark:- | \\
          latgen-faster-mapped --acoustic-scale=0.1 --word-symbol-table=words.txt \\
          exp/tri4/final.mdl exp/tri4/graph/HCLG.fst ark:- "ark:|gzip -c > lat.1.gz"

* ``ark:FILE`` or ``ark,scp:FILE.ark,FILE.scp``: files, written to a temporary name and
  renamed at the end (an interrupted run leaves no partial archive);
* ``ark:| COMMAND``: the standard input of a shell command, e.g. ``ark:| gzip -c > x.gz``.

Utterances come in the order they are computed (batches of similar length), as Kaldi's
table readers accept for archives; sort an scp with ``sort`` when a reader needs ``s``.

:func:`frame_accuracy` measures a hybrid model's outputs against alignments of a data dir.

Example:
    >>> forward_data_dir("exp/hybrid/final.pt", "data/test",
    ...                  "ark,scp:exp/hybrid/ll.ark,exp/hybrid/ll.scp")  # doctest: +SKIP
    {'utterances': 200, 'frames': 51230, 'dim': 3456, 'prior_scale': 1.0, ...}
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from blspeech.data.alignments import frame_targets, read_alignments
from blspeech.errors import UserError
from blspeech.inference.model import Bundle, load_acoustic_model


def parse_wspecifier(wspecifier: str) -> tuple[str, str | None]:
    """``(ark target, scp path or None)`` of ``ark:X`` / ``ark,scp:A,S`` (binary only).

    Example:
        >>> parse_wspecifier("ark,scp:out.ark,out.scp")
        ('out.ark', 'out.scp')
        >>> parse_wspecifier("ark:-")
        ('-', None)
    """
    kind, sep, target = wspecifier.partition(":")
    options = [o for o in kind.split(",") if o]
    usage = ("expected ark:FILE, ark:-, 'ark:| COMMAND' or ark,scp:FILE.ark,FILE.scp (binary "
             "archives)")
    if not sep or not target.strip() or "ark" not in options:
        raise UserError(f"bad wspecifier {wspecifier!r}: {usage}")
    extra = set(options) - {"ark", "scp", "b", "f", "nf", "p"}
    if extra:
        raise UserError(f"bad wspecifier {wspecifier!r}: option(s) {', '.join(sorted(extra))} "
                        f"not supported (text archives are not written); {usage}")
    target = target.strip()
    if "scp" in options:
        ark, comma, scp = target.partition(",")
        if not comma or not ark or not scp or ark == "-" or ark.startswith("|"):
            raise UserError(f"bad wspecifier {wspecifier!r}: ark,scp needs two file names, "
                            "ARK,SCP")
        return ark, scp
    return target, None


def _records(bundle: Bundle, ds: Any, prior_scale: float, max_frames: int,
             num_workers: int, progress: bool, stats: dict[str, Any]
             ) -> Iterator[tuple[str, np.ndarray]]:
    for batch, log_probs, out_lengths in bundle.batches(
            ds, max_frames=max_frames, num_workers=num_workers, progress=progress,
            desc="forward"):
        if bundle.is_hybrid:
            log_probs = bundle.model.to_log_likelihoods(log_probs, prior_scale)
        values = log_probs.cpu().numpy()
        for i, utt in enumerate(batch["utts"]):
            mat = values[i, : int(out_lengths[i])]
            stats["utterances"] += 1
            stats["frames"] += mat.shape[0]
            yield utt, mat


def _stream(out: IO[bytes], records: Iterator[tuple[str, np.ndarray]]) -> None:
    from blspeech.io.kaldi import matrix_record

    for utt, mat in records:
        out.write(matrix_record(utt, mat))
        out.flush()  # a downstream decoder starts on each utterance as soon as it is ready


def forward_data_dir(checkpoint: str | os.PathLike | Bundle,
                     data_dir: str | os.PathLike, wspecifier: str, *,
                     prior_scale: float | None = None, max_frames: int = 20000,
                     num_workers: int = 0, device: str = "cpu",
                     allow_wavscp_commands: bool | None = None, progress: bool = True
                     ) -> dict[str, Any]:
    """Write the model's per-frame outputs for every utterance of ``data_dir`` (see the
    module notes); returns a summary (``utterances``, ``frames``, ``dim``, ...).

    ``prior_scale`` (hybrid models only; default 1.0) scales the log-priors subtracted
    from the log posteriors; 0 writes log posteriors.
    """
    bundle = (checkpoint if isinstance(checkpoint, Bundle)
              else load_acoustic_model(checkpoint, device))
    if prior_scale is not None and not bundle.is_hybrid:
        raise UserError(f"{bundle.path} is a CTC model: it has no priors (--prior-scale is for "
                        "hybrid models)")
    prior_scale = 1.0 if prior_scale is None else float(prior_scale)
    if prior_scale < 0:
        raise UserError(f"--prior-scale must be >= 0, got {prior_scale}")
    ark, scp = parse_wspecifier(wspecifier)
    ds = bundle.dataset(data_dir, transcripts=False, allow_wavscp_commands=allow_wavscp_commands)
    stats: dict[str, Any] = {"utterances": 0, "frames": 0}
    records = _records(bundle, ds, prior_scale, max_frames, num_workers, progress, stats)
    if ark == "-":
        with contextlib.suppress(BrokenPipeError):
            _stream(sys.stdout.buffer, records)
    elif ark.startswith("|"):
        cmd = ark[1:].strip()
        proc = subprocess.Popen(cmd, shell=True, stdin=subprocess.PIPE)
        try:
            _stream(proc.stdin, records)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            code = proc.wait()
        if code != 0:
            raise UserError(f"output command '{cmd}' failed with exit code {code}")
    else:
        from blspeech.io.kaldi import write_matrices

        for path in (ark, scp):
            if path and os.path.dirname(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
        write_matrices(ark, scp, records)
    dim = bundle.model.num_pdfs if bundle.is_hybrid else bundle.model.vocab_size
    return {**stats, "dim": int(dim), "head": "hybrid" if bundle.is_hybrid else "ctc",
            "prior_scale": prior_scale if bundle.is_hybrid else None,
            "frame_shift_seconds": bundle.frame_seconds, "wspecifier": wspecifier}


def frame_accuracy(bundle: Bundle, data_dir: str | os.PathLike, ali_rspecifier: str, *,
                   ali_subsampling: int = 1, tolerance: int = 2, max_frames: int = 20000
                   ) -> dict[str, Any]:
    """Frame accuracy (%) of a hybrid model (an
    :class:`~blspeech.inference.model.Bundle`) against alignments of ``data_dir``:
    the share of output frames whose most likely pdf is the aligned one."""
    ds = bundle.dataset(data_dir, transcripts=False)
    alis, missing = read_alignments(ali_rspecifier, ds.utts, ds.lengths,
                                    ali_subsampling=ali_subsampling, tolerance=tolerance,
                                    num_pdfs=bundle.model.num_pdfs, where=os.fspath(data_dir))
    if missing:
        ds = ds.subset(list(alis))
    correct = frames = 0
    sub = bundle.model.time_subsampling
    for batch, log_post, lengths in bundle.batches(ds, max_frames=max_frames):
        for i, utt in enumerate(batch["utts"]):
            n = int(lengths[i])
            best = log_post[i, :n].argmax(-1).cpu().numpy()
            correct += int((best == frame_targets(alis[utt], n, sub, ali_subsampling)).sum())
            frames += n
    return {"frame_acc": round(100.0 * correct / frames, 4) if frames else None,
            "frames": frames, "utterances": len(alis), "missing": len(missing)}


__all__ = ["forward_data_dir", "frame_accuracy", "parse_wspecifier"]
