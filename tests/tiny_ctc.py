"""A tiny CTC model overfitted on three synthesized 8 kHz utterances (character tokens).

Shared by the decoding tests (greedy, LM search, WFST): a QuartzNet trained for 150 steps
(about 3 s) so that its outputs are meaningful, saved as a blspeech checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from conftest import make_data_dir

from blspeech.data.speech import SpeechDataset, collate
from blspeech.frontend.features import LogMel
from blspeech.io.kaldi import cmvn_stats
from blspeech.models import build_model
from blspeech.models.asr import CTCModel
from blspeech.text.ngram import train_ngram, write_arpa
from blspeech.text.tokenizers import CharTokenizer, TextNormalizer

FRONTEND = LogMel(sample_rate=8000, num_mel_bins=40).config()


def checkpoint(model: CTCModel, tok: Any, norm: TextNormalizer, stats: np.ndarray,
               source: str = "audio", **extra: Any) -> dict:
    """What ``blspeech train`` saves, for ``load_acoustic_model``."""
    return {"model": model.state_dict(), "model_config": model.config,
            "tokenizer": tok.to_dict(), "normalizer": norm.to_dict(), "frontend": FRONTEND,
            "cmvn": {"mode": "global", "stats": torch.from_numpy(stats), "norm_vars": True},
            "data_source": source, "optimizer": None, **extra}


def train_tiny_ctc(root: Path) -> dict[str, Any]:
    """Data dir, trained model (``root/audio.pt``), tokenizer, normalizer, CMVN stats,
    a 3-gram LM of the transcripts (``root/lm.arpa``) and ``texts`` {utt: normalized}."""
    data = make_data_dir(root, n_utts=3, sample_rate=8000, n_speakers=2)
    norm = TextNormalizer(case="lower")
    ds = SpeechDataset(data, source="audio", frontend=FRONTEND)
    tok = CharTokenizer.train([norm(t) for t in ds.texts])
    items = [ds[i] for i in range(len(ds))]
    stats = cmvn_stats(it["feats"].numpy() for it in items)
    batch = collate(items)
    mean = torch.from_numpy(stats[0, :-1] / stats[0, -1]).float()
    std = torch.from_numpy(np.sqrt(stats[1, :-1] / stats[0, -1] - mean.double().numpy() ** 2)
                           ).float()
    valid = torch.arange(batch["feats"].shape[1])[None] < batch["lengths"][:, None]
    feats = (batch["feats"] - mean) / std * valid[..., None]
    targets = [torch.tensor(tok.encode(norm(t))) for t in batch["texts"]]
    target_lengths = torch.tensor([len(t) for t in targets])
    padded = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True)
    torch.manual_seed(0)
    model = CTCModel(build_model("quartznet_tiny", dropout=0.0), tok.vocab_size)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    # One thread: these tiny convolutions gain nothing from two, and with another busy
    # process on a 2-core machine, two threads spin-wait and run 20x slower.
    torch.set_num_threads(1)
    try:
        for _ in range(150):
            log_probs, out_lengths = model(feats, batch["lengths"])
            loss = model.loss(log_probs, out_lengths, padded, target_lengths)
            opt.zero_grad()
            (loss / target_lengths.sum()).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    ckpt = root / "audio.pt"
    torch.save(checkpoint(model, tok, norm, stats), ckpt)
    lm = root / "lm.arpa"
    write_arpa(train_ngram([norm(t) for t in ds.texts], order=3), lm)
    return {"root": root, "data": data, "ckpt": ckpt, "model": model, "tok": tok,
            "norm": norm, "stats": stats, "lm": lm,
            "texts": dict(zip(ds.utts, map(norm, ds.texts), strict=True))}
