"""Text normalization and tokenizers."""

from __future__ import annotations

import io

import pytest
import torch
from conftest import SENTENCES

from blspeech.errors import UserError
from blspeech.text.tokenizers import (
    BLANK,
    UNK,
    BPETokenizer,
    CharTokenizer,
    TextNormalizer,
    tokenizer_from_dict,
    train_tokenizer,
)


def test_normalizer():
    norm = TextNormalizer(case="lower", remove_punctuation=True)
    assert norm("Don't 'QUOTE' me,  OK?") == "don't quote me ok"
    assert norm("Ｆｕｌｌ－width") == "full width"
    assert TextNormalizer()("  keep   Case ") == "keep Case"
    assert TextNormalizer(case="upper")("a b") == "A B"
    with pytest.raises(UserError, match="case"):
        TextNormalizer(case="title")


def _roundtrip(tok):
    buf = io.BytesIO()
    torch.save({"tokenizer": tok.to_dict()}, buf)
    buf.seek(0)
    return tokenizer_from_dict(torch.load(buf, weights_only=True)["tokenizer"])


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_tokenizers_round_trip_text_and_checkpoint(kind, tmp_path):
    tok = train_tokenizer(SENTENCES * 5, kind=kind, vocab_size=60)
    assert tok.tokens[0] == BLANK and tok.tokens[1] == UNK and tok.blank_id == 0
    for sentence in SENTENCES:
        ids = tok.encode(sentence)
        assert ids and 0 not in ids
        assert tok.decode(ids) == sentence
    again = _roundtrip(tok)  # survives a weights_only checkpoint
    assert again.tokens == tok.tokens
    assert again.encode(SENTENCES[0]) == tok.encode(SENTENCES[0])
    tok.write_tokens(tmp_path / "tokens.txt")
    lines = (tmp_path / "tokens.txt").read_text().splitlines()
    assert len(lines) == tok.vocab_size and lines[0] == f"{BLANK} 0"


def test_bpe_is_deterministic_and_sized():
    a = BPETokenizer.train(SENTENCES * 5, 50)
    b = BPETokenizer.train(SENTENCES * 5, 50)
    assert a.vocab_size == 50 and a.tokens == b.tokens
    with pytest.raises(UserError, match="BPE vocabulary size 500 is too large"):
        BPETokenizer.train(["a b"], 500)
    with pytest.raises(UserError, match="sentencepiece"):
        BPETokenizer(b"not a model")


def test_char_tokenizer_unknowns_and_blanks():
    tok = CharTokenizer.train(["ab ba"])
    ids = tok.encode("abc")
    assert ids[-1] == tok.unk_id
    assert tok.decode([0, *tok.encode("ab ba"), 0]) == "ab ba"
    with pytest.raises(UserError, match="<blank> <unk>"):
        CharTokenizer(["a", "b"])


def test_normalizer_tags_and_hesitations_round_trip():
    from blspeech.text.tokenizers import HESITATIONS

    norm = TextNormalizer(case="lower", remove_punctuation=True, remove_tags=True,
                          hesitations=HESITATIONS)
    assert norm("UH, [noise] I <unk> think -- UM it's [laughter] fine. Hmm") == \
        "i think it's fine"
    assert TextNormalizer(hesitations=("UH",), case="lower")("Uh huh") == "huh"
    assert TextNormalizer(**norm.to_dict()) == norm  # survives checkpoints and YAML
    assert TextNormalizer(remove_tags=False)("[noise] a") == "[noise] a"


def test_bpe_vocabulary_size_errors_say_which_way_to_change_vocab_size(tmp_path, capsys):
    from blspeech.cli import main as cli_main

    with pytest.raises(UserError) as e:
        BPETokenizer.train(["hello world", "a small corpus"], 2000)
    msg = str(e.value)
    assert "vocabulary size 2000 is too large" in msg and "lower --vocab-size" in msg, msg
    assert "at most 59" in msg and "INTERNAL" not in msg and "\n" not in msg, msg
    with pytest.raises(UserError, match=r"vocabulary size 5 is too small .* at least 16\b.*"
                                        r"raise --vocab-size"):
        BPETokenizer.train(["hello world", "a small corpus"], 5)
    # The recipes' stage 3 runs train-tokenizer: one line, nothing written.
    data = tmp_path / "data"
    data.mkdir()
    (data / "text").write_text("u1 hello world\nu2 a small corpus\n")
    out = tmp_path / "lang"
    assert cli_main(["train-tokenizer", str(data), str(out), "--vocab-size", "2000"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "lower --vocab-size" in err, err
    assert not out.exists()
