"""Decoding and alignment of data dirs with a trained model, the LM search, and their CLI.

A tiny QuartzNet is overfitted (about 3 s) on three synthesized 8 kHz utterances with a
character tokenizer, so its outputs are meaningful; the LM-search tests that need an
ambiguous acoustic model build log-probabilities by hand.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from tiny_ctc import FRONTEND, train_tiny_ctc
from tiny_ctc import checkpoint as _checkpoint

from blspeech.cli import main
from blspeech.decoding.ctc import greedy, greedy_batch, prefix_beam_search
from blspeech.decoding.lexicon_lm import LexiconLMDecoder
from blspeech.errors import UserError
from blspeech.inference.align import align_data_dir, token_spans
from blspeech.inference.decode import decode_data_dir
from blspeech.inference.model import load_acoustic_model
from blspeech.io.kaldi import read_int_vectors, read_table
from blspeech.text.ngram import train_ngram, write_arpa
from blspeech.text.tokenizers import BPETokenizer, CharTokenizer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Data dir, checkpoints (audio and feats source), tokenizer, normalizer."""
    t = train_tiny_ctc(tmp_path_factory.mktemp("decode"))
    feats_ckpt = t["root"] / "feats.pt"
    torch.save(_checkpoint(t["model"], t["tok"], t["norm"], t["stats"], source="feats"),
               feats_ckpt)
    return {**t, "feats_ckpt": feats_ckpt}


def _durations(data: Path) -> dict[str, float]:
    return {utt: sf.info(e.value).duration for utt, e in read_table(data / "wav.scp").items()}


# --- decoders on the trained model's outputs ------------------------------------------------


def test_greedy_batch_equals_greedy_and_beam_of_one(trained):
    am = load_acoustic_model(trained["ckpt"])
    ds = am.dataset(trained["data"])
    (batch, log_probs, lengths), = list(am.batches(ds, max_frames=10**6))
    hyps = greedy_batch(log_probs, lengths)
    for i, hyp in enumerate(hyps):
        lp = log_probs[i, : int(lengths[i])]
        one = greedy(lp)
        assert (hyp.tokens, hyp.frames) == (one.tokens, one.frames)
        assert hyp.score == pytest.approx(one.score, abs=1e-3)
        assert prefix_beam_search(lp, beam=1)[0].tokens == one.tokens
        assert am.tokenizer.decode(one.tokens) == trained["texts"][batch["utts"][i]]


@pytest.mark.parametrize("method", ["greedy", "beam", "lm"])
def test_decode_data_dir_writes_text_ctm_and_wer(trained, tmp_path, method):
    out = tmp_path / "decode"
    lm = trained["lm"] if method == "lm" else None
    summary = decode_data_dir(trained["ckpt"], trained["data"], out, method=method, lm=lm)
    assert summary["utterances"] == 3 and summary["wer"] == 0.0
    assert summary["rtf"] > 0 and summary["audio_seconds"] > 5
    lines = (out / "text").read_text().splitlines()
    assert [line.split()[0] for line in lines] == sorted(trained["texts"])
    assert {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines} == trained["texts"]
    wer = json.loads((out / "wer.json").read_text())
    assert wer["wer"] == 0.0 and wer["ref_words"] == sum(len(t.split()) for t in
                                                        trained["texts"].values())
    assert set(wer["per_speaker"]) == {"spk0", "spk1"}
    assert (out / "wer.txt").read_text().startswith("%WER 0.00 [ 0 / ")
    # CTM: one line per hypothesis word, in order, inside the utterance.
    durations = _durations(trained["data"])
    ctm: dict[str, list[tuple[float, float, str]]] = {}
    for line in (out / "ctm").read_text().splitlines():
        utt, channel, start, dur, word = line.split()
        assert channel == "1"
        ctm.setdefault(utt, []).append((float(start), float(dur), word))
    for utt, words in ctm.items():
        assert [w for _, _, w in words] == trained["texts"][utt].split()
        ends = [s + d for s, d, _ in words]
        assert all(d > 0 for _, d, _ in words)
        assert all(e <= s2 + 1e-6 for e, (s2, _, _) in zip(ends, words[1:], strict=False))
        assert words[0][0] >= 0 and ends[-1] <= durations[utt] + 0.02


def test_decode_from_feats_and_unscored_dir(trained, tmp_path):
    from blspeech.frontend.extract import compute_feats

    data = tmp_path / "data"
    shutil.copytree(trained["data"], data)
    (data / "text").unlink()
    compute_feats(data, frontend_config=FRONTEND, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "wer.json").write_text("{}")  # stale: this data dir has no transcripts
    summary = decode_data_dir(trained["feats_ckpt"], data, out)
    assert summary["wer"] is None and not (out / "wer.json").exists()
    hyps = dict(line.split(" ", 1) for line in (out / "text").read_text().splitlines())
    assert hyps == trained["texts"]
    # Features made with other settings than the model's: a clear error, nothing written.
    compute_feats(data, frontend_config={**FRONTEND, "num_mel_bins": 30}, progress=False)
    with pytest.raises(UserError, match="dimension 30 but the model .* expects 40"):
        decode_data_dir(trained["feats_ckpt"], data, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


# --- LM search on hand-made log-probabilities -------------------------------------------------


def _log_probs(frames: list[dict[int, float]], vocab: int) -> torch.Tensor:
    """Frames of {token: probability} (the rest share 1e-4), then log."""
    lp = torch.full((len(frames), vocab), 1e-4)
    for t, probs in enumerate(frames):
        for k, p in probs.items():
            lp[t, k] = p
    return (lp / lp.sum(dim=1, keepdim=True)).log()


def _spell(ids: list[int], ambiguous: dict[int, dict[int, float]] | None = None):
    """One confident frame per token followed by a blank frame; ``ambiguous[i]`` replaces
    the distribution of token ``i``'s frame."""
    frames: list[dict[int, float]] = []
    for i, tok in enumerate(ids):
        frames += [(ambiguous or {}).get(i, {tok: 0.95}), {0: 0.99}]
    return frames


def test_lm_picks_the_spelling_of_its_text_char(tmp_path):
    texts = ["we went there", "their dog barks", "we like their dog"]
    lm = tmp_path / "lm.arpa"
    write_arpa(train_ngram(texts, order=3), lm)
    tok = CharTokenizer.train(texts)
    ix = {t: i for i, t in enumerate(tok.tokens)}
    dec = LexiconLMDecoder(tok, lm, beam=16)
    assert dec.marker_mode and "there" in dec.words and "their" in dec.words
    for context, after, expected in (("we went", "", "there"), ("", "dog barks", "their")):
        ids = tok.encode(f"{context} there {after}")
        start = len(tok.encode(context))
        # 'the' + ('r' or 'i') + ('e' or 'r'): the acoustics cannot tell there from their.
        ambiguous = {start + 4: {ix["r"]: 0.5, ix["i"]: 0.5},
                     start + 5: {ix["e"]: 0.5, ix["r"]: 0.5}}
        lp = _log_probs(_spell(ids, ambiguous), tok.vocab_size)
        hyp = dec.decode(lp)
        assert hyp.words == f"{context} {expected} {after}".split()
        assert tok.decode(hyp.tokens) == " ".join(hyp.words)
        assert hyp.frames == sorted(hyp.frames) and hyp.frames[-1] < lp.shape[0]
    # Repeated frames of a word's last letter (no blank between) are one letter.
    ids = tok.encode("we went there")
    frames = [{t: 0.97} for t in ids for _ in range(2)]
    assert dec.decode(_log_probs(frames, tok.vocab_size)).words == ["we", "went", "there"]


def test_lm_picks_the_spelling_of_its_text_bpe(tmp_path):
    texts = ["we went there", "their dog barks", "we like their dog"] * 4
    tok = BPETokenizer.train(texts, vocab_size=30)
    lm = tmp_path / "lm.arpa"
    write_arpa(train_ngram(texts, order=2), lm)
    dec = LexiconLMDecoder(tok, lm, beam=16)
    assert not dec.marker_mode
    there, their = tok.encode("there"), tok.encode("their")
    for context, after, expected in (("we went", "", "there"), ("", "dog barks", "their")):
        ids = [*tok.encode(context), -1, *tok.encode(after)] if context else \
            [-1, *tok.encode(after)]
        pos = ids.index(-1)
        # Both spellings equally likely: slot j holds piece j of each spelling (blank past
        # a spelling's end) at 0.5, so either path has probability 0.5 per slot.
        frames = _spell(ids[:pos])
        for j in range(max(len(there), len(their))):
            probs: dict[int, float] = {}
            for spelling in (there, their):
                piece = spelling[j] if j < len(spelling) else 0
                probs[piece] = probs.get(piece, 0) + 0.5
            frames += [probs, {0: 0.99}]
        frames += _spell(ids[pos + 1:])
        hyp = dec.decode(_log_probs(frames, tok.vocab_size))
        assert hyp.words == f"{context} {expected} {after}".split()


def test_lm_errors(tmp_path):
    tok = CharTokenizer.train(["abc"])
    uni = tmp_path / "uni.arpa"
    write_arpa(train_ngram(["a b c"], order=1), uni)
    with pytest.raises(UserError, match="order 2 or more"):
        LexiconLMDecoder(tok, uni)
    with pytest.raises(UserError, match="not found"):
        LexiconLMDecoder(tok, tmp_path / "missing.arpa")
    (tmp_path / "bad.arpa").write_text("hello\n")
    with pytest.raises(UserError, match="not an ARPA"):
        LexiconLMDecoder(tok, tmp_path / "bad.arpa")
    upper = tmp_path / "upper.arpa"
    write_arpa(train_ngram(["XYZ QQ"], order=2), upper)
    with pytest.raises(UserError, match="can be spelled"):
        LexiconLMDecoder(tok, upper)
    with pytest.raises(UserError, match="needs an ARPA LM, a lexicon, or both"):
        LexiconLMDecoder(tok, None)
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("abc\n")
    with pytest.raises(UserError, match="silence token 'SIL' is not one of the model's"):
        LexiconLMDecoder(tok, None, lexicon=lexicon, sil_token="SIL")


def test_lexicon_without_lm_searches_its_words_only(tmp_path):
    """No LM: the lexicon's words, however unlikely a sequence; a word outside it cannot
    be output even where the acoustics spell it."""
    texts = ["we went there", "their dog barks"]
    tok = CharTokenizer.train(texts)
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("went\nwe\nthere\n")
    dec = LexiconLMDecoder(tok, None, lexicon=lexicon, beam=16)
    assert dec.words == ["there", "we", "went"]
    spoken = _log_probs(_spell(tok.encode("there we went")), tok.vocab_size)
    assert dec.decode(spoken).words == ["there", "we", "went"]
    unknown = _log_probs(_spell(tok.encode("we went their")), tok.vocab_size)
    assert dec.decode(unknown).words[:2] == ["we", "went"]
    assert "their" not in dec.decode(unknown).words


# --- forced alignment ------------------------------------------------------------------------


def test_align_data_dir(trained, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(trained["data"], data)
    text = read_table(data / "text")
    long_utt = sorted(text)[0]
    rows = {u: (" ".join(["abcdefghij"] * 40) if u == long_utt else e.value)
            for u, e in text.items()}
    (data / "text").write_text("".join(f"{u} {t}\n" for u, t in sorted(rows.items())))
    out = tmp_path / "ali"
    with pytest.warns(UserWarning, match="could not be aligned"):
        summary = align_data_dir(trained["ckpt"], data, out)
    assert summary["aligned"] == 2 and summary["unaligned"] == 1
    assert (out / "unaligned.txt").read_text().split()[0] == long_utt
    am = load_acoustic_model(trained["ckpt"])
    (batch, _, out_lengths), = list(am.batches(am.dataset(data), max_frames=10**6))
    frames = dict(zip(batch["utts"], out_lengths.tolist(), strict=True))
    alis = dict(read_int_vectors(f"scp:{out / 'ali.scp'}"))
    assert sorted(alis) == sorted(u for u in text if u != long_utt)
    for utt, ali in alis.items():
        assert len(ali) == frames[utt]
        tokens = [t for t, _, _ in token_spans(ali.tolist())]
        assert tokens == am.tokenizer.encode(am.normalizer(rows[utt]))
    ctm_words = [line.split()[4] for line in (out / "ctm").read_text().splitlines()
                 if line.startswith(sorted(alis)[0] + " ")]
    assert ctm_words == trained["texts"][sorted(alis)[0]].split()
    code, stdout, err = _run(capsys, "align", trained["ckpt"], data, out, "--no-progress")
    assert code == 0 and json.loads(stdout)["unaligned"] == 1
    assert err.startswith("blspeech align: warning: 1 of 3 utterances could not be aligned")


# --- loading checkpoints and the command line --------------------------------------------


def test_load_acoustic_model_errors(trained, tmp_path):
    ckpt = torch.load(trained["ckpt"], weights_only=True)
    ckpt["tokenizer"] = CharTokenizer.train(["only a few letters"]).to_dict()
    torch.save(ckpt, tmp_path / "mixed.pt")
    with pytest.raises(UserError, match="tokenizer has .* tokens but the model outputs"):
        load_acoustic_model(tmp_path / "mixed.pt")
    del ckpt["cmvn"]
    torch.save(ckpt, tmp_path / "nocmvn.pt")
    with pytest.raises(UserError, match="not an acoustic-model checkpoint.*'cmvn'"):
        load_acoustic_model(tmp_path / "nocmvn.pt")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what earlier calls printed
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_decode_align_and_train_lm(trained, tmp_path, capsys):
    out = tmp_path / "dec"
    code, stdout, _ = _run(capsys, "decode", trained["ckpt"], trained["data"], out,
                           "--method", "beam", "--beam", "4", "--no-progress")
    assert code == 0 and len(stdout.splitlines()) == 1
    summary = json.loads(stdout)
    assert summary["wer"] == 0.0 and summary["utterances"] == 3 and summary["rtf"] > 0
    # train-lm from the data dir, normalized with the checkpoint's normalizer, then decode.
    arpa = tmp_path / "lm.arpa"
    code, stdout, _ = _run(capsys, "train-lm", trained["data"], arpa, "--order", "2",
                           "--tokenizer-dir", trained["ckpt"])
    assert code == 0 and json.loads(stdout)["sentences"] == 3
    code, stdout, _ = _run(capsys, "decode", trained["ckpt"], trained["data"], out,
                           "--method", "lm", "--lm", arpa, "--no-progress")
    assert code == 0 and json.loads(stdout)["wer"] == 0.0
    # A tokenizer dir's normalizer (upper case here) is applied to the LM text.
    from blspeech.training.config import train_tokenizer_for

    lang = tmp_path / "lang"
    train_tokenizer_for(trained["data"], lang, kind="char", case="upper")
    upper = tmp_path / "upper.arpa"
    code, stdout, _ = _run(capsys, "train-lm", trained["data"] / "text", upper, "--utt-ids",
                           "--tokenizer-dir", lang)
    assert code == 0 and json.loads(stdout)["normalizer"]["case"] == "upper"
    assert "\tCALL" in upper.read_text() and "call" not in upper.read_text()
    code, _, err = _run(capsys, "train-lm", trained["data"], arpa, "--order", "1")
    assert code == 2 and "order" in err and len(err.splitlines()) == 1
    code, stdout, err = _run(capsys, "align", trained["ckpt"], trained["data"],
                             tmp_path / "ali", "--no-progress")
    assert code == 0 and json.loads(stdout)["aligned"] == 3 and err == ""


def test_cli_errors_are_one_line(trained, tmp_path, capsys):
    foreign = tmp_path / "foreign.pt"
    foreign.write_text("not a checkpoint at all\n")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    no_feats = tmp_path / "nofeats"
    shutil.copytree(trained["data"], no_feats)
    cases = [
        ((tmp_path / "missing.pt", trained["data"]), "does not exist"),
        ((foreign, trained["data"]), "cannot read checkpoint"),
        ((tmp_path / "other.pt", trained["data"]), "not a blspeech training checkpoint"),
        ((trained["feats_ckpt"], no_feats), "feats.scp not found.*compute-feats"),
        ((trained["ckpt"], tmp_path / "nodir"), "does not exist"),
    ]
    for (ckpt, data), message in cases:
        code, stdout, err = _run(capsys, "decode", ckpt, data, tmp_path / "out")
        assert code == 2 and stdout == "", err
        assert len(err.strip().splitlines()) == 1 and err.startswith("blspeech decode: error:")
        assert re.search(message, err), err
    code, _, err = _run(capsys, "decode", trained["ckpt"], trained["data"], tmp_path / "o",
                        "--method", "lm")
    assert code == 2 and "--lm" in err
    assert not (tmp_path / "out").exists()


class _RunsCode:
    """Pickles as a call of os.system: loading it unsafely would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Foreign:
    pass


def test_malicious_and_foreign_torch_files_are_refused_without_unsafe_advice(
        trained, tmp_path, capsys):
    marker = tmp_path / "CODE_RAN"
    evil, foreign = tmp_path / "evil.pt", tmp_path / "foreign.pt"
    torch.save({"model": _RunsCode(marker), "model_config": {}}, evil)
    torch.save({"model": {"w": _Foreign()}, "model_config": {}}, foreign)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")])))
    for path in (evil, foreign):
        proc = subprocess.run([sys.executable, "-m", "blspeech", "decode", str(path),
                               str(trained["data"]), str(tmp_path / "out"), "--no-progress"],
                              capture_output=True, text=True, env=env, timeout=120)
        err = proc.stderr
        assert proc.returncode == 2 and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and str(path) in err, err
        assert "weights_only" not in err and "not a blspeech checkpoint" in err, err
    # Every other reader of torch files: a tokenizer dir, train-lm --tokenizer-dir FILE.
    lang = tmp_path / "lang"
    lang.mkdir()
    torch.save({"tokenizer": _RunsCode(marker)}, lang / "tokenizer.pt")
    for source in (lang, evil):
        code, _, err = _run(capsys, "train-lm", trained["data"], tmp_path / "lm.arpa",
                            "--tokenizer-dir", source)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "weights_only" not in err and "refused" in err, err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_outputs_are_atomic(trained, tmp_path, capsys):
    """A failure on the last utterance leaves the old outputs, and no temp files."""
    data = tmp_path / "data"
    shutil.copytree(trained["data"], data)
    durations = _durations(data)
    (data / "utt2dur").write_text("".join(f"{u} {d:.4f}\n" for u, d in
                                          sorted(durations.items())))
    wav = read_table(data / "wav.scp")
    longest = max(durations, key=durations.get)  # batches go by length: this one is last
    (data / "wav.scp").write_text("".join(
        f"{u} {'cat ' + str(tmp_path / 'gone.wav') + ' |' if u == longest else e.value}\n"
        for u, e in sorted(wav.items())))
    out = tmp_path / "out"
    out.mkdir()
    (out / "text").write_text("old results\n")
    # One utterance per batch (and none longer than a batch, which would warn).
    max_frames = int(max(durations.values()) * 100) + 5
    code, _, err = _run(capsys, "decode", trained["ckpt"], data, out, "--max-frames",
                        max_frames, "--no-progress")
    assert code == 2 and longest in err and len(err.strip().splitlines()) == 1
    assert (out / "text").read_text() == "old results\n"
    assert sorted(os.listdir(out)) == ["text"]
    # The same error raised in a data-loading worker process is still one line.
    code, _, err = _run(capsys, "decode", trained["ckpt"], data, out, "--nj", "1",
                        "--no-progress")
    assert code == 2 and longest in err and len(err.strip().splitlines()) == 1
    assert sorted(os.listdir(out)) == ["text"]
    code, _, err = _run(capsys, "decode", trained["ckpt"], data, out, "--no-wavscp-commands")
    assert code == 2 and "command" in err


def test_ctm_times_scale_with_subsampling(trained):
    am = load_acoustic_model(trained["ckpt"])
    assert am.frame_seconds == pytest.approx(0.01 * am.model.time_subsampling)
    assert math.isclose(am.frame_shift, 0.01)
