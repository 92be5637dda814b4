"""WFST decoding of CTC outputs (blspeech.decoding.wfst): the TLG graph built with kaldifst
and kaldilm from a tokenizer and an ARPA LM, Kaldi's decoders from kaldi-decoder, and
``blspeech mkgraph`` / ``decode --method wfst``.

Graphs come from small real tokenizers (characters, sentencepiece BPE) and ARPA files
written by blspeech's own n-gram trainer; log-probabilities that spell a sentence are
built by hand along a CTC path (blanks, repeated frames); one test overfits a tiny model
on three synthesized utterances (about 3 s) and decodes them through the CLI.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_ctc import train_tiny_ctc

from blspeech.cli import main
from blspeech.decoding.ctc import hypothesis_ctm
from blspeech.decoding.wfst import WfstDecoder, make_graph
from blspeech.decoding.wfst.graph import (
    TLG_FILE,
    TOKENS_FILE,
    WORDS_FILE,
    disambiguate,
    read_symbols,
    spell_words,
)
from blspeech.errors import UserError
from blspeech.inference.decode import decode_data_dir
from blspeech.text.ngram import train_ngram, write_arpa
from blspeech.text.tokenizers import BPETokenizer, CharTokenizer

kaldifst = pytest.importorskip("kaldifst")
pytest.importorskip("kaldilm")
pytest.importorskip("kaldi_decoder")

SENTENCES = ["call me now", "hello all", "call all now", "a hello", "ab a call"]


def _graph(tmp_path: Path, tok, sentences=SENTENCES, order: int = 2) -> Path:
    arpa = tmp_path / "lm.arpa"
    write_arpa(train_ngram(sentences, order=order), arpa)
    out = tmp_path / "graph"
    make_graph(tok, arpa, out)
    return out


def _ctc_labels(ids: list[int], hold: int = 2) -> list[int]:
    """Frame labels of a CTC path: a blank, then each token held ``hold`` frames and
    followed by a blank (so equal neighbours are separated, as CTC needs)."""
    path = [0]
    for i in ids:
        path += [i] * hold + [0]
    return path


def _peaked(labels: list[int], vocab: int, peak: float = 8.0) -> torch.Tensor:
    logits = torch.zeros(len(labels), vocab)
    logits[torch.arange(len(labels)), torch.tensor(labels)] = peak
    return torch.log_softmax(logits, dim=-1)


def _words_of(graph: Path, labels: list[int]) -> list[str] | None:
    """The words TLG outputs for the frame labels (None: TLG rejects them)."""
    tlg = kaldifst.StdVectorFst.read(str(graph / TLG_FILE))
    acc = kaldifst.StdVectorFst()
    state = acc.add_state()
    acc.start = state
    for label in labels:
        nxt = acc.add_state()
        acc.add_arc(state, kaldifst.StdArc(label + 1, label + 1, 0.0, nxt))  # TLG: id + 1
        state = nxt
    acc.set_final(state, 0.0)
    composed = kaldifst.StdVectorFst(kaldifst.compose(acc, tlg))
    if composed.num_states == 0:
        return None
    best = kaldifst.shortest_path(composed)
    ok, _, olabels, _ = kaldifst.get_linear_symbol_sequence(best)
    assert ok
    words = read_symbols(graph / WORDS_FILE)
    return [words[o] for o in olabels]


# --- the graph --------------------------------------------------------------------------


def test_graph_accepts_ctc_paths_of_lexicon_words_only(tmp_path):
    tok = CharTokenizer.train(SENTENCES)
    graph = _graph(tmp_path, tok)
    info = json.loads((graph / "graph.json").read_text())
    assert info["words"] == 7 and info["vocab_size"] == tok.vocab_size and not info["skipped"]
    hello_all = tok.encode("hello all")
    assert _words_of(graph, _ctc_labels(hello_all)) == ["hello", "all"]
    # Word order the LM never saw: reached through G's backoff.
    assert _words_of(graph, _ctc_labels(tok.encode("now hello"))) == ["now", "hello"]
    # "l" held over the two l's of "hello" with no blank between collapses to "helo".
    ids = tok.encode("hello")
    i = ids.index(tok.tokens.index("l"))
    no_blank = _ctc_labels(ids[:i]) + [ids[i]] * 3 + [0] + _ctc_labels(ids[i + 2:])[1:]
    assert _words_of(graph, no_blank) is None
    assert _words_of(graph, _ctc_labels(tok.encode("helo"))) is None
    # A prefix of a word is no word: "hel" is rejected.
    assert _words_of(graph, _ctc_labels(tok.encode("hel"))) is None


def test_disambiguation_of_prefix_and_shared_spellings(tmp_path):
    tok = CharTokenizer.train(SENTENCES)
    spellings, skipped = spell_words(tok, ["a", "ab", "all", "zzz"])
    assert skipped == ["zzz"] and set(spellings) == {"a", "ab", "all"}
    assert disambiguate(spellings) == {"a": 1, "ab": 0, "all": 0}  # "▁a" begins "▁ab"
    assert disambiguate({"x": [3, 4], "y": [3, 4], "z": [5]}) == {"x": 1, "y": 2, "z": 0}
    graph = _graph(tmp_path, tok)
    tokens = read_symbols(graph / TOKENS_FILE)
    assert tokens[: tok.vocab_size] == tok.tokens and tokens[tok.vocab_size:] == ["#0", "#1"]
    # "a" and "ab" both decode although one spelling is a prefix of the other.
    assert _words_of(graph, _ctc_labels(tok.encode("ab a"))) == ["ab", "a"]
    assert _words_of(graph, _ctc_labels(tok.encode("a ab"))) == ["a", "ab"]


# --- decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize("decoder", ["faster", "lattice"])
def test_decoding_peaked_log_probs_returns_the_sentence_and_times(tmp_path, decoder):
    tok = BPETokenizer.train(SENTENCES * 4, vocab_size=24)
    graph = _graph(tmp_path, tok)
    ids = tok.encode("call all now")
    assert len(ids) > 3  # words spelled with several pieces, not only whole-word pieces
    labels = _ctc_labels(ids, hold=3)
    dec = WfstDecoder(graph, tok, decoder=decoder)
    hyp = dec.decode(_peaked(labels, tok.vocab_size), utt="u1")
    assert hyp.words == ["call", "all", "now"] and hyp.reached_final
    assert hyp.tokens == ids
    assert hyp.frames == [1 + 4 * k for k in range(len(ids))]  # first frame of each token
    assert dec.partial == []
    ctm = hypothesis_ctm("u1", hyp, tok, 0.04)
    assert [line.split()[4] for line in ctm] == ["call", "all", "now"]
    starts = [float(line.split()[2]) for line in ctm]
    assert starts == sorted(starts) and starts[0] == pytest.approx(0.04, abs=0.005)


def test_the_lm_decides_between_acoustically_equal_words(tmp_path):
    """Frames that are half "call", half "all": the LM's context picks the word, and a
    large acoustic scale makes a slightly better acoustic match win instead."""
    tok = CharTokenizer.train(SENTENCES)
    graph = _graph(tmp_path, tok, ["call me now"] * 5 + ["all me now"])
    me_now = _ctc_labels(tok.encode("me now"))
    ids_call, ids_all = tok.encode("call"), tok.encode("all")
    # "▁ c a l l" against "▁ a l l": the c frames are ambiguous between c and blank.
    lp = _peaked(_ctc_labels(ids_call) + me_now[1:], tok.vocab_size)
    c = tok.tokens.index("c")
    c_frames = [t for t, label in enumerate(_ctc_labels(ids_call)) if label == c]
    for t in c_frames:
        row = torch.full((tok.vocab_size,), -20.0)
        row[c], row[0] = np.log(0.45), np.log(0.55)  # blank slightly more likely
        lp[t] = row
    assert WfstDecoder(graph, tok, acoustic_scale=1.0).decode(lp).words == ["call", "me",
                                                                            "now"]
    assert WfstDecoder(graph, tok, acoustic_scale=50.0).decode(lp).words == ["all", "me",
                                                                             "now"]
    assert ids_all == ids_call[:1] + ids_call[2:]


def test_word_penalty_trades_words(tmp_path):
    tok = CharTokenizer.train(SENTENCES)
    graph = _graph(tmp_path, tok)
    lp = _peaked(_ctc_labels(tok.encode("a ab")), tok.vocab_size, peak=2.0)
    assert WfstDecoder(graph, tok).decode(lp).words == ["a", "ab"]
    # A per-word cost above what the words gain acoustically: the all-blank path wins.
    none = WfstDecoder(graph, tok, word_penalty=100.0).decode(lp)
    assert none.words == [] and none.tokens == [] and none.reached_final


def test_no_final_state_is_named_listed_and_decoded_partially(tmp_path):
    """A graph that needs three tokens, decoded over two frames: no final state."""
    tok = CharTokenizer.train(SENTENCES)
    graph = tmp_path / "linear"
    graph.mkdir()
    fst = kaldifst.StdVectorFst()
    states = [fst.add_state() for _ in range(4)]
    fst.start = states[0]
    ids = tok.encode("now")
    for n, i in enumerate(ids[:3]):
        fst.add_arc(states[n], kaldifst.StdArc(i + 1, 1 if n == 0 else 0, 0.0, states[n + 1]))
    fst.set_final(states[3], 0.0)
    fst.write(str(graph / TLG_FILE))
    (graph / WORDS_FILE).write_text("<eps> 0\nnow 1\n")
    (graph / TOKENS_FILE).write_text("".join(f"{t} {i}\n" for i, t in enumerate(tok.tokens)))
    dec = WfstDecoder(graph, tok)
    lp = _peaked(ids[:2], tok.vocab_size)
    with pytest.warns(UserWarning, match=r"utterance spk0-utt7: .*no final state"):
        hyp = dec.decode(lp, utt="spk0-utt7")
    assert not hyp.reached_final and dec.partial == ["spk0-utt7"]
    assert hyp.words == ["now"] and hyp.tokens == ids[:2]  # the best partial path
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = dec.decode(_peaked(ids[:3], tok.vocab_size), utt="ok")
    assert full.reached_final and full.tokens == ids[:3] and dec.partial == ["spk0-utt7"]


# --- bad input ----------------------------------------------------------------------------


def test_words_the_pieces_cannot_spell_are_left_out_and_listed(tmp_path):
    tok = CharTokenizer.train(SENTENCES)
    with pytest.warns(UserWarning, match=r"1 of 8 words .* cannot be spelled.*: xylo"):
        graph = _graph(tmp_path, tok, [*SENTENCES, "call xylo"])
    info = json.loads((graph / "graph.json").read_text())
    assert info["skipped"] == ["xylo"] and info["words"] == 7
    assert _words_of(graph, _ctc_labels(tok.encode("call me"))) == ["call", "me"]


def test_bad_arpa_files_give_one_user_error_naming_the_file(tmp_path):
    tok = CharTokenizer.train(SENTENCES)
    good = tmp_path / "good.arpa"
    write_arpa(train_ngram(SENTENCES, order=2), good)
    lines = good.read_text().splitlines()
    at = lines.index("\\2-grams:") + 1
    broken = tmp_path / "broken.arpa"
    broken.write_text("\n".join([*lines[:at], "-0.5 call", *lines[at:]]) + "\n")
    with pytest.raises(UserError, match=r"broken\.arpa.*line \d+"):
        make_graph(tok, broken, tmp_path / "g1")
    text = tmp_path / "notes.txt"
    text.write_text("just some words\n")
    with pytest.raises(UserError, match=r"notes\.txt is not an ARPA"):
        make_graph(tok, text, tmp_path / "g2")
    with pytest.raises(UserError, match=r"missing\.arpa not found"):
        make_graph(tok, tmp_path / "missing.arpa", tmp_path / "g3")
    none = tmp_path / "none.arpa"
    write_arpa(train_ngram(["xyz qq"], order=2), none)
    with pytest.raises(UserError, match="none of the 2 words"):
        make_graph(tok, none, tmp_path / "g4")


def test_graph_of_other_tokens_is_refused(tmp_path):
    graph = _graph(tmp_path, CharTokenizer.train(SENTENCES))
    other = CharTokenizer.train(["zebra"])
    with pytest.raises(UserError, match="other tokens than the model's"):
        WfstDecoder(graph, other)
    with pytest.raises(UserError, match="TLG.fst not found|words.txt not found"):
        WfstDecoder(tmp_path, None)


# --- a trained model, through the CLI -----------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny QuartzNet overfitted on three synthesized utterances (character tokens)."""
    t = train_tiny_ctc(tmp_path_factory.mktemp("wfst_model"))
    return {**t, "texts": list(t["texts"].values())}


def test_mkgraph_and_decode_wfst_cli_on_a_trained_model(tiny_model, capsys):
    root = tiny_model["root"]
    graph = root / "graph"
    assert main(["mkgraph", str(tiny_model["ckpt"]), str(tiny_model["lm"]), str(graph)]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["words"] == len({w for t in tiny_model["texts"] for w in t.split()})
    out = root / "decode_wfst"
    assert main(["decode", str(tiny_model["ckpt"]), str(tiny_model["data"]), str(out),
                 "--method", "wfst", "--graph", str(graph), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["wer"] == 0.0 and summary["utterances"] == 3
    assert summary["no_final_state"] == [] and summary["method"] == "wfst"
    hyps = sorted(line.split(maxsplit=1)[1].strip()
                  for line in (out / "text").read_text().splitlines())
    assert hyps == sorted(tiny_model["texts"])
    ctm = (out / "ctm").read_text().split("\n")[0].split()
    assert len(ctm) == 5 and float(ctm[3]) > 0
    wer = json.loads((out / "wer.json").read_text())
    assert wer["wer"] == 0.0


def test_decode_wfst_needs_a_graph_and_a_ctc_method(tiny_model, tmp_path):
    with pytest.raises(UserError, match="needs a decoding graph"):
        decode_data_dir(tiny_model["ckpt"], tiny_model["data"], tmp_path / "d", method="wfst")
    with pytest.raises(UserError, match="used by method 'wfst' only"):
        decode_data_dir(tiny_model["ckpt"], tiny_model["data"], tmp_path / "d",
                        method="greedy", graph=tmp_path)
