"""``blspeech align-gmm``: lexicon, features, monophone training and alignment of a data
dir (and of other data dirs with the same model), written as Kaldi archives."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from blspeech.errors import UserError
from blspeech.gmm.features import gmm_features
from blspeech.gmm.lexicon import build_lexicon, phone_list, read_lexicon, write_lang
from blspeech.gmm.train import (
    align_all,
    train_mono,
    transcripts_to_prons,
    write_alignments,
)
from blspeech.io.datadir.core import DataDir


def _texts(data_dir: str | os.PathLike) -> dict[str, str]:
    d = DataDir.load(data_dir)
    if not d.has("text"):
        raise UserError(f"{os.fspath(data_dir)}/text not found: the aligner needs transcripts")
    return {u: d.text(u) for u in d.utterances()}


def align_gmm(data_dir: str | os.PathLike, exp_dir: str | os.PathLike, *,
              lexicon: str | os.PathLike | None = None, oov: str = "espeak",
              num_iters: int = 40, totgauss: int = 1000,
              align_dirs: Sequence[str | os.PathLike] = (), nj: int = 1,
              subset: int = 0,
              progress: Callable[[int, int], Callable[[int], None]] | None = None
              ) -> dict[str, Any]:
    """Train a monophone GMM-HMM on ``data_dir`` and write its alignments to ``exp_dir``
    (``ali.*``, ``pdf.*``, ``num_pdfs``, ``skipped.txt``; ``lang/`` with lexicon.txt,
    phones.txt, words.txt and hmm.txt (each phone's pdfs); ``topo``; ``info.json``); each
    of ``align_dirs`` is aligned with the final model into ``exp_dir/ali_<its name>``;
    ``nj`` processes align. ``subset`` > 0 trains on that many of the shortest utterances
    (Kaldi's monophone recipes: ``utils/subset_data_dir.sh --shortest``) and then aligns
    all of ``data_dir`` with the final model, as Kaldi's align_si.sh does.
    ``progress(total, pass)`` returns a callback taking a count of utterances done.
    Returns the summary written to info.json.
    """
    t0 = time.time()
    exp = os.fspath(exp_dir)
    names = [os.path.basename(os.path.normpath(os.fspath(d))) for d in align_dirs]
    if len(set(names)) != len(names):
        raise UserError(f"align dirs {', '.join(map(os.fspath, align_dirs))}: their names "
                        "must differ (each goes to EXP_DIR/ali_<name>)")
    texts = {os.fspath(data_dir): _texts(data_dir)}
    for d in align_dirs:
        texts[os.fspath(d)] = _texts(d)
    words = {w for t in texts.values() for s in t.values() for w in s.split()}
    lex, source, missing = build_lexicon(
        words, oov=oov, lexicon=read_lexicon(lexicon) if lexicon else None)
    phones = phone_list(lex)
    os.makedirs(exp, exist_ok=True)
    write_lang(os.path.join(exp, "lang"), lex, phones)
    prons, skipped = transcripts_to_prons(texts[os.fspath(data_dir)], lex)
    feats = gmm_features(data_dir, sorted(prons, key=str.encode))
    train = prons
    if 0 < subset < len(prons):
        # Shortest first, ties by name: the same subset on every run.
        shortest = sorted(prons, key=lambda u: (len(feats[u]), u.encode()))[:subset]
        train = {u: prons[u] for u in shortest}
    n = len(train)
    tick = progress(n * (num_iters + 1), 0) if progress else None
    result = train_mono(feats, train, phones, num_iters=num_iters, totgauss=totgauss,
                        progress=tick, nj=nj)
    _warn_skipped(skipped, "")
    if train is prons:
        skipped.update(result.skipped)
    else:  # the final model aligns every utterance; train_mono warned of its own failures
        tick = progress(len(prons), 1) if progress else None
        result.alignments, failed = align_all(result.model, feats, prons, tick, nj)
        _warn_skipped({u: r for u, r in failed.items() if u not in result.skipped}, "")
        skipped.update(failed)
    _write_model_files(exp, phones, result.model)
    info: dict[str, Any] = {
        "data_dir": os.fspath(data_dir), "phones": len(phones),
        "num_pdfs": result.model.num_pdfs, "gaussians": int(result.model.am.num_gauss),
        "num_iters": num_iters, "totgauss": totgauss, "trained_on": n,
        "log_like_per_frame": [round(x, 4) for x in result.log_like],
        "lexicon_sources": {s: sum(1 for v in source.values() if v == s)
                            for s in sorted(set(source.values()))},
        "words_without_pronunciation": missing,
        "train": write_alignments(exp, result.model, result.alignments, skipped),
    }
    for d, name in zip(align_dirs, names, strict=True):
        info[f"ali_{name}"] = _align_dir(d, texts[os.fspath(d)], lex, result.model,
                                         os.path.join(exp, f"ali_{name}"), progress, nj)
    info["seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(exp, "info.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    return info


def _warn_skipped(skipped: dict[str, str], where: str) -> None:
    for utt, reason in sorted(skipped.items()):
        warnings.warn(f"{where}utterance {utt}: {reason}; skipped (listed in skipped.txt)",
                      stacklevel=3)


def _write_model_files(exp: str, phones: Sequence[str], model: Any) -> None:
    """``topo`` and ``lang/hmm.txt``: each phone's pdfs, state by state (the H of a
    decoding graph, 'blspeech mkgraph')."""
    from blspeech.gmm.topology import topology_text

    with open(os.path.join(exp, "topo"), "w", encoding="utf-8") as f:
        f.write(topology_text(len(phones), silence=(1,)))
    with open(os.path.join(exp, "lang", "hmm.txt"), "w", encoding="utf-8") as f:
        f.writelines(f"{phone} {' '.join(map(str, model.hmms[i].pdfs))}\n"
                     for i, phone in enumerate(phones, 1))


def _align_dir(data_dir: str | os.PathLike, texts: dict[str, str], lex: Any, model: Any,
               out_dir: str, progress: Callable[[int, int], Callable[[int], None]] | None,
               nj: int) -> dict[str, Any]:
    """Align another data dir with the trained model into ``out_dir``; its summary."""
    prons, skipped = transcripts_to_prons(texts, lex)
    tick = progress(len(prons), 1) if progress else None
    feats = gmm_features(data_dir, sorted(prons, key=str.encode))
    alis, failed = align_all(model, feats, prons, tick, nj)
    skipped.update(failed)
    _warn_skipped(skipped, f"{os.fspath(data_dir)}: ")
    return write_alignments(out_dir, model, alis, skipped)


__all__ = ["align_gmm"]
