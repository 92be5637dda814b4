"""Adapters for ESPnet, icefall and torchaudio: the interfaces they call, checkpoints, docs.

ESPnet and icefall are not installed: their calls are written here as their sources make
them (ESPnet's ``ESPnetASRModel.encode`` and ``CTC``, icefall's ``EncoderInterface`` and
``forward_ctc``). The checkpoint comes from a real ``blspeech train`` run (ctc_tiny, 2
epochs on 2 espeak-ng utterances, about 2 s).
"""

from __future__ import annotations

import importlib
import re
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import make_data_dir
from torch import nn

import blspeech.adapters
from blspeech.adapters import (
    ESPnetEncoder,
    TorchaudioTranscriber,
    icefall_encoder,
    load_encoder,
)
from blspeech.cli import main as cli_main
from blspeech.errors import UserError
from blspeech.frontend.extract import compute_cmvn, compute_feats
from blspeech.inference.model import load_acoustic_model
from blspeech.io.checkpoint import make_checkpoint, save_checkpoint
from blspeech.models import build_model, build_model_from_config
from blspeech.training.config import read_config_file
from blspeech.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Using blspeech encoders in ESPnet, icefall and torchaudio pipelines"
ENCODERS = ["bl_resnet_am_tiny", "resnet_am_tiny", "quartznet_tiny", "conformer_tiny"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny tensors on 2 shared cores: a second intra-op thread mostly waits for a busy core
    # (10x slower under load here), as in test_train.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread) -> Path:
    """best.pt of a 2-epoch ctc_tiny (bl_resnet_am_tiny, 40 bins) run of blspeech train."""
    root = tmp_path_factory.mktemp("adapters")
    data = make_data_dir(root, n_utts=2, sample_rate=8000, n_speakers=1)
    compute_feats(data, nj=1, frontend_config={"num_mel_bins": 40}, progress=False)
    compute_cmvn(data)
    assert cli_main(["train-tokenizer", str(data), str(root / "lang"), "--kind", "char"]) == 0
    cfg = read_config_file("ctc_tiny")
    cfg["training"].update(epochs=2, average_last_n=0)
    summary = train(cfg, train_dir=data, dev_dir=data, tokenizer_dir=root / "lang",
                    exp_dir=root / "exp", device="cpu", resume=False)
    return Path(summary["best"])


def batch(dim: int = 80, lengths: tuple[int, ...] = (101, 57), frames: int | None = None):
    torch.manual_seed(0)
    return (torch.randn(len(lengths), frames or max(lengths), dim), torch.tensor(lengths))


# --- ESPnet ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ENCODERS)
def test_espnet_contract(name):
    enc = ESPnetEncoder(name, input_size=80).eval()
    xs_pad, ilens = batch()
    with torch.no_grad():
        out, olens, states = enc(xs_pad, ilens)
        ref, ref_lens = enc.encoder(xs_pad, ilens)
    assert states is None
    assert enc.output_size() == enc.encoder.output_size() == out.shape[2]
    assert torch.equal(olens, ref_lens) and olens.dtype == ilens.dtype
    assert out.shape == (2, int(olens.max()), enc.output_size())
    assert torch.equal(out, ref[:, : out.shape[1]])
    assert enc.encoder.config["num_mel_bins"] == 80
    assert enc.time_subsampling == enc.encoder.time_subsampling


def test_espnet_output_stops_at_longest_length():
    # Padding past the longest utterance: ESPnet asserts out.size(1) <= olens.max().
    enc = ESPnetEncoder("bl_resnet_am_tiny", input_size=80).eval()
    xs_pad, ilens = batch(lengths=(100, 57), frames=130)
    with torch.no_grad():
        out, olens, _ = enc(xs_pad, ilens)
        ref, _ = enc.encoder(xs_pad, ilens)
    assert out.shape[1] == int(olens.max()) == 25 and ref.shape[1] == 33
    assert torch.equal(out, ref[:, :25]) and not ref[:, 25:].any()


def test_espnet_style_ctc_training_step():
    """ESPnetASRModel.encode + espnet2.asr.ctc.CTC, as in ESPnet's sources."""
    vocab = 12
    encoder = ESPnetEncoder(input_size=80, name="bl_resnet_am_tiny", dropout=0.0)
    ctc_lo = nn.Linear(encoder.output_size(), vocab)
    feats, feats_lengths = batch()
    ys_pad = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, -1, -1]])
    ys_lens = torch.tensor([5, 3])
    assert not encoder.interctc_use_conditioning  # read by ESPnetASRModel.encode
    encoder_out, encoder_out_lens, _ = encoder(feats, feats_lengths)
    assert encoder_out.size(0) == feats.size(0)
    assert encoder_out.size(-2) <= encoder_out_lens.max()
    ys_hat = ctc_lo(F.dropout(encoder_out, p=0.0)).transpose(0, 1).log_softmax(2)
    ys_true = torch.cat([y[:n] for y, n in zip(ys_pad, ys_lens, strict=True)])
    loss = F.ctc_loss(ys_hat, ys_true, encoder_out_lens, ys_lens, reduction="sum",
                      zero_infinity=True) / feats.size(0)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    grads = [p.grad for p in encoder.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_espnet_prev_states_must_be_none():
    enc = ESPnetEncoder("quartznet_tiny", input_size=40)
    xs_pad, ilens = batch(dim=40)
    with pytest.raises(UserError, match="not streaming"):
        enc(xs_pad, ilens, prev_states=torch.zeros(1))


def test_espnet_from_module_and_option_errors():
    module = build_model("resnet_am_tiny", num_mel_bins=80)
    wrapped = ESPnetEncoder(module, input_size=80)
    assert wrapped.encoder is module
    assert ESPnetEncoder(module).output_size() == 64
    assert ESPnetEncoder("resnet_am_tiny", num_mel_bins=80, input_size=80).output_size() == 64
    bad = [
        (lambda: ESPnetEncoder(module, input_size=40), "takes 80 features"),
        (lambda: ESPnetEncoder(module, dropout=0.2), "registry name"),
        (lambda: ESPnetEncoder("resnet_am_tiny", input_size=80, num_mel_bins=40), "disagree"),
        (lambda: ESPnetEncoder("no_such_model"), "unknown model 'no_such_model'"),
        (lambda: ESPnetEncoder("resnet_am_tiny", colour=3), "no option"),
        (lambda: ESPnetEncoder("bl_resnet50"), "speech encoder"),
        (lambda: ESPnetEncoder(), "needs an encoder name"),
        (lambda: ESPnetEncoder("resnet_am_tiny", checkpoint="x.pt"), "not both"),
    ]
    for make, message in bad:
        with pytest.raises(UserError, match=message) as info:
            make()
        assert "\n" not in str(info.value)


def test_from_checkpoint_reproduces_the_trained_encoder(trained):
    am = load_acoustic_model(trained, fuse_bn=False)  # the model as blspeech decodes it
    enc = ESPnetEncoder.from_checkpoint(trained)
    assert not enc.training and not am.model.training
    fresh = build_model_from_config(am.model.encoder.config)
    state = enc.encoder.state_dict()
    assert state.keys() == am.model.encoder.state_dict().keys()
    assert all(torch.equal(v, am.model.encoder.state_dict()[k]) for k, v in state.items())
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in state.items()
               if v.is_floating_point())  # the weights were trained, not a fresh init
    feats, lengths = batch(dim=40)
    with torch.no_grad():
        out, olens, _ = enc(feats, lengths)
        ref, ref_lens = am.model.encoder(feats, lengths)
    assert torch.equal(out, ref) and torch.equal(olens, ref_lens)
    # The same through ESPnet's constructor path (encoder_conf: {checkpoint: ...}).
    via_conf = ESPnetEncoder(input_size=40, checkpoint=str(trained))
    with torch.no_grad():
        assert torch.equal(via_conf(feats, lengths)[0], ref)
    assert torch.equal(load_encoder(trained)(feats, lengths)[0], ref)


def test_checkpoint_errors(trained, tmp_path):
    with pytest.raises(UserError, match="takes 40 features per frame but input_size is 80"):
        ESPnetEncoder.from_checkpoint(trained, input_size=80)
    with pytest.raises(UserError, match="does not exist"):
        load_encoder(tmp_path / "missing.pt")
    bare = tmp_path / "bare.pt"  # an encoder's own checkpoint: no acoustic-model config
    save_checkpoint(bare, make_checkpoint(build_model("resnet_am_tiny")))
    with pytest.raises(UserError, match="no 'encoder' entry"):
        load_encoder(bare)
    with pytest.raises(UserError, match="do not fit its config"):
        load_encoder(trained, output_dim=32)


@pytest.fixture
def reload_adapters():
    """Reload blspeech.adapters after the test's sys.modules changes are undone."""
    with pytest.MonkeyPatch.context() as mp:
        yield mp
    importlib.reload(blspeech.adapters)


def test_imports_without_espnet(reload_adapters):
    for name in ("espnet2", "espnet2.asr", "espnet2.asr.encoder",
                 "espnet2.asr.encoder.abs_encoder"):
        reload_adapters.setitem(sys.modules, name, None)  # import raises ModuleNotFoundError
    module = importlib.reload(blspeech.adapters)
    assert module.ESPnetEncoder.__bases__ == (nn.Module,)
    enc = module.ESPnetEncoder("resnet_am_tiny")
    assert enc(*batch(dim=40))[2] is None


def test_subclasses_espnet_abs_encoder_when_importable(reload_adapters):
    # This fake only stands for the import path espnet2.asr.encoder.abs_encoder: an ABC with
    # ESPnet's two abstract methods, as in ESPnet's source. It does not test ESPnet itself.
    from abc import ABC, abstractmethod

    class AbsEncoder(nn.Module, ABC):
        @abstractmethod
        def output_size(self) -> int: ...

        @abstractmethod
        def forward(self, xs_pad, ilens, prev_states=None): ...

    names = ["espnet2", "espnet2.asr", "espnet2.asr.encoder", "espnet2.asr.encoder.abs_encoder"]
    for name in names:
        reload_adapters.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules[names[-1]].AbsEncoder = AbsEncoder
    module = importlib.reload(blspeech.adapters)
    assert issubclass(module.ESPnetEncoder, AbsEncoder)
    enc = module.ESPnetEncoder("bl_resnet_am_tiny", input_size=80)  # no abstract method left
    assert isinstance(enc, AbsEncoder) and isinstance(enc, nn.Module)
    out, olens, states = enc(*batch())
    assert out.shape == (2, 26, 64) and olens.tolist() == [26, 15] and states is None


# --- icefall --------------------------------------------------------------------------------

class EncoderInterface(nn.Module):
    """icefall's recipe-local encoder_interface.py (a plain module, not an ABC)."""

    def __init__(self, num_features: int, output_dim: int) -> None:
        super().__init__()

    def forward(self, x, x_lens):
        raise NotImplementedError("Please implement it in a subclass")


def test_icefall_encoder_is_the_recipe_interface_and_trains():
    torch.manual_seed(0)
    encoder = icefall_encoder(build_model("bl_resnet_am_tiny", num_mel_bins=80),
                              EncoderInterface)
    # icefall's Transducer / AsrModel constructors:
    assert isinstance(encoder, EncoderInterface), type(encoder)
    assert type(encoder) is type(icefall_encoder(build_model("resnet_am_tiny"),
                                                 EncoderInterface))
    assert (encoder.output_dim, encoder.subsampling_factor) == (64, 4)
    vocab = 10
    ctc_output = nn.Sequential(nn.Dropout(p=0.1), nn.Linear(encoder.output_dim, vocab),
                               nn.LogSoftmax(dim=-1))
    params = list(encoder.parameters()) + list(ctc_output.parameters())
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=0.1)
    x, x_lens = batch()
    targets, target_lengths = torch.tensor([1, 2, 3, 4, 5, 6, 7]), torch.tensor([4, 3])
    encoder_out, encoder_out_lens = encoder(x, x_lens, warmup=0.5)  # AsrModel.forward_ctc:
    assert torch.all(encoder_out_lens > 0)
    loss = F.ctc_loss(log_probs=ctc_output(encoder_out).permute(1, 0, 2), targets=targets,
                      input_lengths=encoder_out_lens, target_lengths=target_lengths,
                      reduction="sum")
    loss.backward()
    optimizer.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, params, strict=True)]
    assert all(changed[-2:]) and sum(changed[:-2]) > len(changed[:-2]) // 2
    with pytest.raises(UserError, match="interface must be"):
        icefall_encoder(build_model("resnet_am_tiny"), int)


# --- torchaudio -----------------------------------------------------------------------------

def test_torchaudio_transcriber_keywords_and_no_streaming():
    enc = build_model("conformer_tiny").eval()
    t = TorchaudioTranscriber(enc)
    feats, lengths = batch(dim=40)
    with torch.no_grad():
        out, out_lengths = t(input=feats, lengths=lengths)  # as RNNT.forward calls it
        ref, ref_lengths = enc(feats, lengths)
    assert torch.equal(out, ref) and torch.equal(out_lengths, ref_lengths)
    assert t.output_size() == 64
    with pytest.raises(TypeError):
        enc(input=feats, lengths=lengths)  # why the wrapper exists
    with pytest.raises(UserError, match="not streaming"):
        t.infer(feats, lengths, None)


# --- the README section ---------------------------------------------------------------------

def doc_section() -> str:
    """The README's adapters section (its code blocks are what users copy)."""
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, f"no section {SECTION!r} in README.md"
    return text[text.index(SECTION) + len(SECTION):].split("\n## ", 1)[0]


def test_doc_examples_run(trained, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", doc_section(), re.S)
    assert len(blocks) == 4
    (tmp_path / "exp" / "ctc").mkdir(parents=True)
    shutil.copy(trained, tmp_path / "exp" / "ctc" / "best.pt")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    results = []
    for code in blocks:
        ns: dict = {}
        exec(compile(code, "README.md", "exec"), ns)
        results.append(ns)
    espnet, icefall, ctc, rnnt = results
    assert espnet["out"].shape == (2, 30, 64) and espnet["olens"].tolist() == [30, 19]
    assert not espnet["trained"].training and espnet["trained"].output_size() == 64
    assert icefall["encoder_out_lens"].tolist() == [30, 19]
    assert torch.isfinite(icefall["ctc_loss"])
    assert all(p.grad is not None for p in icefall["encoder"].parameters())
    labels = ctc["labels"][0].tolist()
    assert len(labels) == 30 and [t for i, t in enumerate(labels)
                                  if t and (i == 0 or labels[i - 1] != t)] == [2, 3, 4]
    assert all(0 <= t < len(ctc["tokens"]) for t in ctc["best"].tokens.tolist())
    assert rnnt["logits"].shape == (2, 30, 4, 30) and torch.isfinite(rnnt["loss"])
    assert rnnt["hyps"] and rnnt["hyps"][0][0][0] == 0  # tokens start with blank
