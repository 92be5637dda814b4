"""The HMM-hybrid head: alignments, targets, priors, training, ``blspeech forward`` output
read back by kaldi-io, and the token topology end to end (CTC alignment -> hybrid
training -> Viterbi decoding).

Data: 6 real espeak-ng utterances at 8 kHz with 40 log-mel bins. Kaldi-style alignments
(one pdf per feature frame) are made from the features themselves: the pdf of a frame
is the quartile of its mean log-mel energy combined with whether the energy rises, a
labelling a model can learn from the audio, so frame accuracy must beat the majority
class by a clear margin.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import kaldi_io
import numpy as np
import pytest
import torch
from conftest import make_data_dir

from blspeech.cli import main as cli_main
from blspeech.data.alignments import (
    UNSEEN_LOG_PRIOR,
    ctc_path_to_pdfs,
    frame_targets,
    log_priors,
    read_alignments,
    token_topology_pdfs,
)
from blspeech.decoding.hybrid import viterbi_token_loop
from blspeech.errors import UserError
from blspeech.frontend.extract import compute_cmvn, compute_feats
from blspeech.inference.model import load_acoustic_model
from blspeech.io.checkpoint import load_checkpoint
from blspeech.io.kaldi import read_int_vectors, read_matrices, read_table, write_int_vectors
from blspeech.models import build_model
from blspeech.models.asr import HybridModel, acoustic_model_from_config
from blspeech.training.config import build_config, read_config_file
from blspeech.training.losses import hybrid_loss_sum
from blspeech.training.prep import prepare
from blspeech.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1",
           PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


# --- pure functions ------------------------------------------------------------------------


def test_ctc_path_to_pdfs_gives_first_and_later_frames_and_silence():
    path = [0, 4, 0, 0, 4, 2, 2, 0, 0]
    # token 4 (pdfs 7/8) twice, token 2 (pdfs 3/4), trailing blanks are silence
    assert ctc_path_to_pdfs(path).tolist() == [0, 7, 8, 8, 7, 3, 4, 0, 0]
    assert ctc_path_to_pdfs([0, 0, 0]).tolist() == [0, 0, 0]
    assert token_topology_pdfs(5) == 9


def test_frame_targets_take_the_centre_frame_at_both_rates():
    ali = np.arange(10, dtype=np.int32)                 # one label per feature frame
    assert frame_targets(ali, 3, 4).tolist() == [2, 6, 9]   # centres 2, 6, 10 -> clipped
    quarter = np.array([5, 6, 7], dtype=np.int32)       # labels every 4th feature frame
    assert frame_targets(quarter, 3, 4, ali_subsampling=4).tolist() == [5, 6, 7]
    assert frame_targets(ali, 5, 2, ali_subsampling=2).tolist() == [0, 1, 2, 3, 4]


def test_log_priors_are_relative_counts_and_rare_pdfs_are_disabled_as_in_kaldi_nnet1():
    # Kaldi nnet1 (src/nnet/nnet-pdf-prior.cc, PdfPrior::PdfPrior): log(rel_freq + 1e-20),
    # and a pdf with rel_freq < --prior-floor (1e-10) gets the log prior sqrt(FLT_MAX)
    # itself (not its log), which disables its output when decoding.
    lp = log_priors([np.array([0, 0, 0, 2]), np.array([2, 2, 0, 0])], 4)
    assert torch.allclose(lp[[0, 2]].exp(), torch.tensor([5 / 8, 3 / 8]))
    sqrt_flt_max = float(np.sqrt(np.float32(np.finfo(np.float32).max)))
    assert UNSEEN_LOG_PRIOR == pytest.approx(sqrt_flt_max, rel=1e-6)
    assert lp[1] == lp[3] == torch.tensor(UNSEEN_LOG_PRIOR, dtype=torch.float32)
    # Seen but rarer than the floor: floored too; a floor of 0 keeps it.
    rare = [np.array([1]), np.zeros(10**4, dtype=np.int64)]
    assert log_priors(rare, 2, prior_floor=1e-3)[1] == UNSEEN_LOG_PRIOR
    assert log_priors(rare, 2, prior_floor=0.0)[1] == pytest.approx(np.log(1 / 10001))
    # Such a pdf's log-likelihood is hugely negative but finite (no NaN downstream).
    ll = torch.zeros(1, 4).log_softmax(-1) - lp
    assert torch.isfinite(ll).all() and ll[0, 1] < -1e18


def _path_score(ll: torch.Tensor, states: tuple[int, ...], penalty: float) -> float | None:
    """Score of a pdf sequence under the token topology, None if the topology forbids it."""
    score, prev = 0.0, None
    for t, s in enumerate(states):
        if s and s % 2 == 0 and prev not in (s - 1, s):   # later frame without its token
            return None
        if s % 2 == 1:
            score -= penalty
        score += float(ll[t, s])
        prev = s
    return score


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_token_loop_finds_the_best_path_of_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    frames, pdfs = 5, 5
    ll = torch.randn(frames, pdfs, generator=gen) * 3
    penalty = [0.0, 1.5, -1.0][seed % 3]
    best = max((s for s in ((_path_score(ll, p, penalty), p)
                            for p in itertools.product(range(pdfs), repeat=frames))
                if s[0] is not None), key=lambda x: x[0])
    tokens, starts = viterbi_token_loop(ll, penalty)
    want_tokens = [(p + 1) // 2 for p in best[1] if p % 2 == 1]
    want_starts = [t for t, p in enumerate(best[1]) if p % 2 == 1]
    assert (tokens, starts) == (want_tokens, want_starts)


def test_viterbi_penalty_trades_tokens_for_fewer_insertions():
    ll = torch.full((6, 5), -2.0)
    ll[:, 1] = 0.0          # token 1's first frame is best everywhere: a new token each frame
    assert viterbi_token_loop(ll, 0.0)[0] == [1] * 6
    assert viterbi_token_loop(ll, 5.0)[0] == []   # silence (-2 per frame) beats 6 penalties


def test_hybrid_loss_counts_frames_and_accuracy():
    lp = torch.log_softmax(torch.tensor([[[5.0, 0, 0], [0, 5, 0], [0, 0, 0]]]), -1)
    loss, count, per, correct = hybrid_loss_sum(lp, torch.tensor([2]), [np.array([0, 0, 2, 2])],
                                                subsampling=2)
    # output frames 0, 1 <- feature frames 1, 3: targets 0, 2; frame 2 is padding
    assert count == 2 and correct == 1
    assert float(loss) == pytest.approx(float(-lp[0, 0, 0] - lp[0, 1, 2]), rel=1e-6)
    smooth, *_ = hybrid_loss_sum(lp, torch.tensor([2]), [np.array([0, 0, 2, 2])],
                                 subsampling=2, label_smoothing=0.2)
    assert float(smooth) != pytest.approx(float(loss))


def test_hybrid_model_round_trips_its_config_and_priors():
    am = HybridModel(build_model("resnet_am_tiny", num_mel_bins=40), 9, "token")
    am.log_prior.copy_(torch.linspace(-3, -1, 9))
    again = acoustic_model_from_config(am.config)
    again.load_state_dict(am.state_dict())
    assert again.config == am.config and torch.equal(again.log_prior, am.log_prior)
    feats, lens = torch.randn(1, 30, 40), torch.tensor([30])
    post, _ = am.eval()(feats, lens)
    ll, _ = am.log_likelihoods(feats, lens, prior_scale=0.5)
    assert torch.allclose(ll, post - 0.5 * am.log_prior)
    with pytest.raises(ValueError, match="odd number"):
        HybridModel(build_model("resnet_am_tiny"), 8, "token")


# --- alignments from files -----------------------------------------------------------------


def test_read_alignments_checks_lengths_ids_and_reads_pipes(tmp_path):
    ark = tmp_path / "ali.ark"
    write_int_vectors(ark, tmp_path / "ali.scp",
                      {"a": np.array([1, 1, 2]), "b": np.array([3] * 10), "c": np.array([0] * 4)})
    alis, missing = read_alignments(f"scp:{tmp_path / 'ali.scp'}", ["a", "c", "d"], [5, 4, 3])
    assert missing == ["d"]
    assert alis["a"].tolist() == [1, 1, 2, 2, 2]      # 2 frames short: the last state continues
    alis, _ = read_alignments(f"ark:cat {ark} |", ["b"], [40], ali_subsampling=4)
    assert alis["b"].tolist() == [3] * 10
    with pytest.raises(UserError, match=r"utterance 'b': its alignment has 10 frames but its "
                                        r"20 feature frames need 20"):
        read_alignments(f"ark:{ark}", ["b"], [20], where="data/train")
    with pytest.raises(UserError, match="pdf-id 3 but the model has 3 pdfs"):
        read_alignments(f"ark:{ark}", ["b"], [10], num_pdfs=3)
    with pytest.raises(UserError, match="hold none of the 1 utterances"):
        read_alignments(f"ark:{ark}", ["zzz"], [10])
    write_int_vectors(tmp_path / "neg.ark", None, {"a": np.array([1, -2, 3])})
    with pytest.raises(UserError, match="negative pdf-id -2.*ali-to-pdf"):
        read_alignments(f"ark:{tmp_path / 'neg.ark'}", ["a"], [3])
    ark.write_bytes(ark.read_bytes()[:-3])
    with pytest.raises(UserError, match="truncated"):
        read_alignments(f"ark:{ark}", ["a"], [3])


# --- training and forward ------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hybrid")
    data = make_data_dir(root, n_utts=6, sample_rate=8000, n_speakers=2)
    compute_feats(data, nj=1, frontend_config={"num_mel_bins": 40}, progress=False)
    compute_cmvn(data)
    # Kaldi-style alignments: one pdf per feature frame, learnable from the features.
    alis = {}
    for utt, mat in read_matrices(f"scp:{data / 'feats.scp'}"):
        energy = mat.mean(axis=1)
        quart = np.digitize(energy, np.quantile(energy, [0.25, 0.5, 0.75]))
        rising = np.r_[0, np.diff(energy) > 0].astype(int)
        alis[utt] = (quart * 2 + rising).astype(np.int32)
    write_int_vectors(root / "ali.ark", root / "ali.scp", alis)
    lang = root / "lang"
    assert cli_main(["train-tokenizer", str(data), str(lang), "--vocab-size", "30"]) == 0
    return {"root": root, "data": data, "ali": f"scp:{root / 'ali.scp'}", "alis": alis,
            "lang": lang}


def hybrid_config(**training) -> dict:
    cfg = read_config_file("hybrid_tiny")
    cfg["training"].update(training)
    cfg["data"].update(buckets=1, max_frames=4000)
    return cfg


@pytest.fixture(scope="module")
def hybrid_exp(corpus, tmp_path_factory):
    exp = tmp_path_factory.mktemp("hybrid_exp") / "exp"
    cfg = hybrid_config(epochs=25, average_last_n=2)
    cfg["head"]["label_smoothing"] = 0.1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = train(cfg, train_dir=corpus["data"], dev_dir=corpus["data"],
                        tokenizer_dir=None, exp_dir=exp, device="cpu", resume=False,
                        train_ali=corpus["ali"], dev_ali=corpus["ali"])
    finally:
        torch.set_num_threads(threads)
    return exp, summary


def test_hybrid_training_learns_frames_and_saves_priors(corpus, hybrid_exp):
    exp, summary = hybrid_exp
    assert summary["epochs"] == 25
    rows = [json.loads(line) for line in (exp / "metrics.jsonl").open()]
    acc = [r["dev_frame_acc"] for r in rows]
    # Majority class of the 8 pdfs: the frame share of the most frequent one.
    counts = np.bincount(np.concatenate(list(corpus["alis"].values())), minlength=8)
    majority = 100.0 * counts.max() / counts.sum()
    assert acc[-1] > majority + 20, (acc, majority)
    assert rows[-1]["dev_loss"] < rows[0]["dev_loss"] and rows[-1]["dev_wer"] is None
    ckpt = load_checkpoint(exp / "best.pt")
    assert ckpt["model_config"]["head"] == "hybrid" and ckpt["model_config"]["num_pdfs"] == 8
    assert ckpt["tokenizer"] is None
    # Priors: counts of the targets at the encoder's output rate (subsampling 4).
    targets = []
    for utt, n in read_table(corpus["data"] / "utt2num_frames").items():
        targets.append(frame_targets(corpus["alis"][utt], -(-int(n.value) // 4), 4))
    assert torch.allclose(ckpt["model"]["log_prior"], log_priors(targets, 8))
    assert "dev frame accuracy" in (exp / "train.log").read_text()


def test_forward_writes_kaldi_archives_of_log_likelihoods(corpus, hybrid_exp, tmp_path):
    exp, _ = hybrid_exp
    model = str(exp / "best.pt")
    bundle = load_acoustic_model(model)
    ds = bundle.dataset(corpus["data"])
    want = {}
    for batch, log_post, lens in bundle.batches(ds, max_frames=4000):
        ll = bundle.model.to_log_likelihoods(log_post, 1.0)
        for i, utt in enumerate(batch["utts"]):
            want[utt] = ll[i, : int(lens[i])].numpy()
    # ark:- through a pipe, read by kaldi-io (an independent reader of Kaldi's format).
    proc = subprocess.run([sys.executable, "-m", "blspeech", "forward", model,
                           str(corpus["data"]), "ark:-", "--no-progress"],
                          capture_output=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    (tmp_path / "stdout.ark").write_bytes(proc.stdout)
    got = dict(kaldi_io.read_mat_ark(str(tmp_path / "stdout.ark")))
    assert sorted(got) == sorted(want)
    for utt in want:
        assert got[utt].dtype == np.float32
        np.testing.assert_allclose(got[utt], want[utt], rtol=1e-4, atol=1e-4)
    assert '"utterances": 6' in proc.stderr.decode()   # the summary goes to stderr
    # Byte for byte what kaldi-io writes for the same matrices in the same order.
    with open(tmp_path / "kaldi_io.ark", "wb") as f:
        for utt, mat in got.items():
            kaldi_io.write_mat(f, mat, key=utt)
    assert (tmp_path / "kaldi_io.ark").read_bytes() == proc.stdout
    # ark,scp files, prior scale 0: log posteriors, each row a distribution.
    ark, scp = tmp_path / "post.ark", tmp_path / "post.scp"
    assert cli_main(["forward", model, str(corpus["data"]), f"ark,scp:{ark},{scp}",
                     "--prior-scale", "0", "--no-progress"]) == 0
    post = dict(kaldi_io.read_mat_scp(str(scp)))
    assert sorted(post) == sorted(want)
    for utt, mat in post.items():
        np.testing.assert_allclose(np.logaddexp.reduce(mat, axis=1), 0.0, atol=1e-4)
        prior = bundle.model.log_prior.numpy()
        np.testing.assert_allclose(mat - prior, want[utt], rtol=1e-4, atol=1e-4)
    # An output pipe, written by this process: the same layout (keys, headers) byte for
    # byte, the same values up to float rounding (another process may run other kernels).
    out = tmp_path / "piped.ark"
    assert cli_main(["forward", model, str(corpus["data"]), f"ark:| cat > {out}",
                     "--no-progress"]) == 0
    assert_same_float_ark(out.read_bytes(), proc.stdout)


def _split_float_ark(data: bytes) -> tuple[bytes, list[np.ndarray]]:
    """A binary float-matrix archive as (every byte but the values, the matrices)."""
    layout, mats, pos = bytearray(), [], 0
    while pos < len(data):
        key_end = data.index(b" ", pos)
        head_end = key_end + 16  # " \0BFM " + "\4" int32 rows + "\4" int32 cols
        head = data[key_end:head_end]
        assert head[:6] == b" \0BFM " and head[6] == head[11] == 4, head
        rows, cols = np.frombuffer(head[7:11] + head[12:16], dtype="<i4")
        size = 4 * int(rows) * int(cols)
        mats.append(np.frombuffer(data[head_end:head_end + size], dtype="<f4")
                    .reshape(rows, cols))
        layout += data[pos:head_end]
        pos = head_end + size
    return bytes(layout), mats


def assert_same_float_ark(got: bytes, want: bytes) -> None:
    """Keys and headers byte for byte, values with a float tolerance."""
    (layout, mats), (want_layout, want_mats) = _split_float_ark(got), _split_float_ark(want)
    assert layout == want_layout and len(mats) == len(want_mats)
    for mat, ref in zip(mats, want_mats, strict=True):
        np.testing.assert_allclose(mat, ref, rtol=1e-5, atol=1e-5)


def test_float_ark_comparison_tolerates_last_bits_not_layout():
    def ark(mats: dict[str, np.ndarray]) -> bytes:
        f = io.BytesIO()
        f.mode = "wb"  # kaldi-io checks it
        for key, mat in mats.items():
            kaldi_io.write_mat(f, mat.astype(np.float32), key=key)
        return f.getvalue()

    a = {"u1": np.linspace(-3, 1, 12).reshape(3, 4), "u2": np.full((2, 4), -1.8e19)}
    b = {k: np.nextafter(v.astype(np.float32), np.float32(0)) for k, v in a.items()}
    assert ark(a) != ark(b)
    assert_same_float_ark(ark(a), ark(b))  # the last bits differ: fine
    for other in ({"u1": a["u1"], "u3": a["u2"]}, {"u1": a["u1"], "u2": a["u2"][:1]},
                  {"u1": a["u1"] + 0.1, "u2": a["u2"]}):
        with pytest.raises(AssertionError):
            assert_same_float_ark(ark(other), ark(a))


def test_forward_and_decode_errors_are_one_line(corpus, hybrid_exp, capsys):
    exp, _ = hybrid_exp
    model = str(exp / "best.pt")
    for args, message in [
        (["forward", model, str(corpus["data"]), "ark,t:x.ark"], "not supported"),
        (["forward", model, str(corpus["data"]), "scp:x.scp"], "bad wspecifier"),
        (["forward", model, str(corpus["data"]), "ark:| exit 3"], "failed with exit code 3"),
        (["decode", model, str(corpus["data"]), str(corpus["root"] / "dec")],
         "--method lm --lexicon EXP/lang/lexicon.txt, or with Kaldi"),
    ]:
        assert cli_main(args + ["--no-progress"]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_hybrid_config_and_alignment_errors(corpus, tmp_path, capsys):
    base = ["train", "--config", "hybrid_tiny", "--train-dir", str(corpus["data"]),
            "--dev-dir", str(corpus["data"]), "--exp-dir", str(tmp_path / "exp"),
            "--device", "cpu"]
    short = {u: a[: len(a) // 2] for u, a in corpus["alis"].items()}
    write_int_vectors(tmp_path / "short.ark", None, short)
    first = sorted(short)[0]
    for extra, message in [
        ([], "give --train-ali and --dev-ali"),
        (["--train-ali", f"ark:{tmp_path / 'short.ark'}", "--dev-ali", corpus["ali"]],
         f"utterance '{first}': its alignment has"),
        (["--train-ali", corpus["ali"], "--dev-ali", corpus["ali"], "--set",
          "head.num_pdfs=4"], "but the model has 4 pdfs"),
        (["--train-ali", corpus["ali"], "--dev-ali", corpus["ali"], "--set",
          "training.select_by=dev_wer"], "select_by dev_wer needs head.type ctc"),
        (["--train-ali", corpus["ali"], "--dev-ali", corpus["ali"], "--set",
          "head.topology=token"], "head.topology token needs --tokenizer-dir"),
    ]:
        assert cli_main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_init_encoder_starts_from_another_runs_encoder(corpus, hybrid_exp, tmp_path, capsys):
    """training.init_encoder: a CTC run starts from the hybrid model's encoder, its head
    fresh; a resumed run keeps its own weights; a different encoder is one-line error."""
    exp, _ = hybrid_exp
    source = load_checkpoint(exp / "best.pt")["model"]
    cfg = build_config(read_config_file("ctc_tiny"),
                       {"training.init_encoder": str(exp / "best.pt")})
    args = (os.fspath(corpus["data"]), os.fspath(corpus["data"]), os.fspath(corpus["lang"]),
            os.fspath(tmp_path / "ctc"), "cpu")
    model = prepare(cfg, *args, resume=True).model
    got = model.state_dict()
    enc = [k for k in source if k.startswith("encoder.")]
    assert enc and all(torch.equal(got[k], source[k]) for k in enc)
    scratch = prepare(build_config(read_config_file("ctc_tiny")), *args, resume=True).model
    assert not all(torch.equal(got[k], scratch.state_dict()[k]) for k in enc)
    # The head is fresh: the same initial values as a run without init_encoder.
    assert torch.equal(got["head.weight"], scratch.state_dict()["head.weight"])
    # A run to resume keeps its checkpoint's weights (init_encoder only starts a run).
    one = build_config(read_config_file("ctc_tiny"), {"training.epochs": 1})
    train(one, train_dir=args[0], dev_dir=args[1], tokenizer_dir=args[2], exp_dir=args[3],
          device="cpu", resume=False)
    resumed = prepare(cfg, *args, resume=True)
    assert resumed.ckpt is not None
    assert torch.equal(resumed.model.state_dict()[enc[0]], scratch.state_dict()[enc[0]])
    capsys.readouterr()

    base = ["train", "--config", "ctc_tiny", "--train-dir", str(corpus["data"]),
            "--dev-dir", str(corpus["data"]), "--tokenizer-dir", str(corpus["lang"]),
            "--exp-dir", str(tmp_path / "bad"), "--device", "cpu"]
    for extra, message in [
        (["--set", f"training.init_encoder={exp / 'best.pt'}", "--set",
          "model.name=resnet_am_tiny"], "holds a bl_resnet_am_tiny encoder, but this run "
         "trains resnet_am_tiny"),
        (["--set", f"training.init_encoder={exp / 'best.pt'}", "--set", "model.alpha=4"],
         "do not fit this run's bl_resnet_am_tiny"),
        (["--set", f"training.init_encoder={tmp_path / 'none.pt'}"],
         f"training.init_encoder: checkpoint {tmp_path / 'none.pt'} does not exist"),
    ]:
        assert cli_main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "bad").exists()


# --- the token topology end to end ---------------------------------------------------------


def test_token_topology_from_ctc_alignment_trains_and_decodes(corpus, tmp_path):
    """CTC model -> forced alignment -> token-topology targets -> hybrid model -> Viterbi
    decoding. Trained and tested on the same 6 utterances: the hybrid model must learn to
    read back their transcripts from the CTC-derived targets."""
    ctc_cfg = read_config_file("ctc_tiny")
    ctc_cfg["training"].update(epochs=60, average_last_n=0)
    ctc_cfg["optim"]["lr"] = 0.01
    ctc_cfg["data"].update(buckets=1, max_frames=4000)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(ctc_cfg, train_dir=corpus["data"], dev_dir=corpus["data"],
              tokenizer_dir=corpus["lang"], exp_dir=tmp_path / "ctc", device="cpu",
              resume=False)
        ali_dir = tmp_path / "ali"
        assert cli_main(["align", str(tmp_path / "ctc" / "last.pt"), str(corpus["data"]),
                         str(ali_dir), "--hybrid-targets", "--no-progress"]) == 0
        topo = dict(line.split() for line in (ali_dir / "topology").read_text().splitlines())
        assert topo == {"topology": "token", "num_pdfs": str(token_topology_pdfs(30)),
                        "ali_subsampling": "4"}
        paths = dict(read_int_vectors(f"scp:{ali_dir / 'ali.scp'}"))
        pdfs = dict(read_int_vectors(f"scp:{ali_dir / 'pdf.scp'}"))
        assert all(pdfs[u].tolist() == ctc_path_to_pdfs(paths[u]).tolist() for u in paths)
        cfg = hybrid_config(epochs=60, average_last_n=0)
        cfg["optim"]["lr"] = 0.01
        cfg["head"].update(topology="token", ali_subsampling=4)
        train(cfg, train_dir=corpus["data"], dev_dir=corpus["data"],
              tokenizer_dir=corpus["lang"], exp_dir=tmp_path / "hyb", device="cpu",
              resume=False, train_ali=f"scp:{ali_dir / 'pdf.scp'}",
              dev_ali=f"scp:{ali_dir / 'pdf.scp'}")
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "decode"
    assert cli_main(["decode", str(tmp_path / "hyb" / "last.pt"), str(corpus["data"]),
                     str(out), "--no-progress"]) == 0
    summary = json.loads((out / "wer.json").read_text())
    assert summary["wer"] < 25.0, summary["wer"]
    ctm = (out / "ctm").read_text().splitlines()
    assert ctm and all(len(line.split()) == 5 for line in ctm)
    assert cli_main(["decode", str(tmp_path / "hyb" / "last.pt"), str(corpus["data"]),
                     str(out), "--method", "greedy", "--no-progress"]) == 2
    assert math.isfinite(summary["wer"])


def test_hybrid_ddp_two_processes_match_one_process(corpus, tmp_path):
    """torchrun with 2 gloo processes gives the per-step losses, weights and priors of one
    process with twice the gradient accumulation (the same global batches)."""
    import re

    step_line = re.compile(r" step (\d+) batch \d+/\d+ loss (\S+) ")

    def args(exp, accum):
        return ["-m", "blspeech", "train", "--config", "hybrid_tiny", "--train-dir",
                str(corpus["data"]), "--dev-dir", str(corpus["data"]), "--exp-dir", str(exp),
                "--train-ali", corpus["ali"], "--dev-ali", corpus["ali"], "--device", "cpu",
                "--set", "data.max_frames=400", "--set", "training.epochs=2",
                "--set", "training.log_interval=1", "--set", f"training.accum_grad={accum}",
                "--set", "model.dropout=0.1", "--set", "head.label_smoothing=0.1"]

    def losses(exp):
        out = {}
        for line in (exp / "train.log").read_text().splitlines():
            m = step_line.search(line)
            if m:
                out[int(m.group(1))] = float(m.group(2))
        return out

    one, two = tmp_path / "one", tmp_path / "two"
    r = subprocess.run([sys.executable, *args(one, 2)], capture_output=True, text=True,
                       env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc-per-node", "2", *args(two, 1)], capture_output=True,
                       text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world size 2" in (two / "train.log").read_text()
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) and len(a) >= 4
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4), step
    ca, cb = load_checkpoint(one / "last.pt"), load_checkpoint(two / "last.pt")
    # BatchNorm running stats differ (each rank saw half the batches), so do dev metrics.
    for name, _ in acoustic_model_from_config(ca["model_config"]).named_parameters():
        torch.testing.assert_close(cb["model"][name], ca["model"][name], rtol=1e-4, atol=1e-6)
    assert torch.equal(ca["model"]["log_prior"], cb["model"]["log_prior"])
    rows = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(0 < r["dev_frame_acc"] <= 100 for r in rows)
