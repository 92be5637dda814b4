"""CTC head and decoders, checked against brute-force enumeration of all paths."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from blspeech.decoding.ctc import format_ctm, greedy, prefix_beam_search, word_times
from blspeech.models import build_model
from blspeech.models.asr import CTCModel, acoustic_model_from_config, too_long_for_ctc


def _collapse(path):
    out, prev = [], 0
    for tok in path:
        if tok != 0 and tok != prev:
            out.append(tok)
        prev = tok
    return tuple(out)


def _text_probs(lp):
    """log P(text) for every text, summing all CTC paths (exponential, tiny inputs only)."""
    probs: dict[tuple, float] = {}
    for path in itertools.product(range(lp.shape[1]), repeat=lp.shape[0]):
        p = sum(float(lp[t, k]) for t, k in enumerate(path))
        text = _collapse(path)
        probs[text] = math.log(math.exp(probs[text]) + math.exp(p)) if text in probs else p
    return probs


@pytest.mark.parametrize("seed", range(6))
def test_prefix_beam_search_finds_most_probable_text(seed):
    torch.manual_seed(seed)
    lp = torch.log_softmax(torch.randn(6, 3) * 1.5, dim=-1)
    probs = _text_probs(lp)
    best_text = max(probs, key=probs.get)
    hyp = prefix_beam_search(lp, beam=64, token_prune=None)[0]
    assert tuple(hyp.tokens) == best_text
    assert hyp.score == pytest.approx(probs[best_text], abs=1e-5)
    nbest = prefix_beam_search(lp, beam=64, token_prune=None, nbest=3)
    ranked = sorted(probs.values(), reverse=True)[:3]
    assert [h.score for h in nbest] == pytest.approx(ranked, abs=1e-5)


def test_greedy_is_the_best_path():
    torch.manual_seed(0)
    lp = torch.log_softmax(torch.randn(7, 3), dim=-1)
    best = max(itertools.product(range(3), repeat=7),
               key=lambda path: sum(float(lp[t, k]) for t, k in enumerate(path)))
    hyp = greedy(lp)
    assert tuple(hyp.tokens) == _collapse(best)
    assert hyp.score == pytest.approx(sum(float(lp[t, k]) for t, k in enumerate(best)))


def test_greedy_frames_and_peaky_agreement():
    # blank, a, a, blank, a, b, b  ->  a a b emitted at frames 1, 4, 5
    ids = [0, 1, 1, 0, 1, 2, 2]
    lp = torch.full((7, 3), -20.0)
    lp[torch.arange(7), ids] = 0.0
    hyp = greedy(lp)
    assert hyp.tokens == [1, 1, 2] and hyp.frames == [1, 4, 5]
    assert prefix_beam_search(lp, beam=1)[0].tokens == hyp.tokens
    assert prefix_beam_search(lp, beam=5)[0].frames == hyp.frames


def test_word_times_and_ctm():
    words = word_times(["\u2581he", "llo", "\u2581wor", "ld"], [2, 5, 10, 12], 0.04)
    assert [w for w, _, _ in words] == ["hello", "world"]
    assert words[0][1] == pytest.approx(0.08) and words[0][2] == pytest.approx(0.16)
    assert format_ctm("u1", words) == ["u1 1 0.08 0.16 hello", "u1 1 0.40 0.12 world"]


def test_ctc_model_config_round_trip_and_loss():
    am = CTCModel(build_model("bl_resnet_am_tiny"), vocab_size=12)
    again = acoustic_model_from_config(am.config)
    assert again.config == am.config
    feats, lengths = torch.randn(2, 60, 40), torch.tensor([60, 41])
    log_probs, out_lengths = am(feats, lengths)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]), atol=1e-5)
    targets = torch.tensor([[3, 4, 5], [6, 7, 0]])
    loss = am.loss(log_probs, out_lengths, targets, torch.tensor([3, 2]))
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert too_long_for_ctc([[1, 2, 3], [1, 1, 1]], torch.tensor([3, 4])) == [1]
    with pytest.raises(ValueError, match="head"):
        acoustic_model_from_config({"head": "rnnt", "encoder": {}, "vocab_size": 3})
