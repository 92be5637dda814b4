"""Datasets, bucketing sampler, collation and loaders on real synthesized speech."""

from __future__ import annotations

import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from blspeech.data.speech import (
    BucketingBatchSampler,
    SpeechDataset,
    collate,
    make_dataloader,
)
from blspeech.errors import UserError
from blspeech.frontend.extract import compute_cmvn, compute_feats
from blspeech.io import kaldi

# --- helpers -----------------------------------------------------------------------------


def copy_dir(src: Path, tmp_path: Path) -> Path:
    """A writable copy of a (read-only, session-scoped) data dir; wav paths are absolute."""
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return dst


def write_feats(data: Path, **frontend) -> None:
    """feats.scp, utt2num_frames, utt2dur and conf/fbank.yaml, as 'blspeech compute-feats'."""
    compute_feats(data, frontend_config=frontend or None, progress=False)


@pytest.fixture(scope="module")
def feats_dir(speech_data_dir, tmp_path_factory) -> Path:
    """The 16 kHz speech data dir with features (read-only use; copy before changing)."""
    data = copy_dir(speech_data_dir, tmp_path_factory.mktemp("feats"))
    write_feats(data)
    return data


def random_lengths(n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(50, 1500, size=n).tolist()


# --- sampler -----------------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [True, False])
def test_sampler_batches_respect_max_frames_and_cover_each_utterance_once(shuffle):
    lengths = random_lengths(500)
    sampler = BucketingBatchSampler(lengths, max_frames=6000, shuffle=shuffle, seed=3,
                                    num_replicas=1, rank=0)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        for b in batches:
            assert max(lengths[i] for i in b) * len(b) <= 6000
        seen = Counter(i for b in batches for i in b)
        assert sorted(seen) == list(range(500)) and set(seen.values()) == {1}
    # Grouping by length keeps padding low: well under 10% of the padded frames.
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert 1 - sum(lengths) / padded < 0.1


def test_sampler_without_shuffle_follows_length_order():
    lengths = random_lengths(100)
    sampler = BucketingBatchSampler(lengths, 5000, shuffle=False, num_replicas=1, rank=0)
    flat = [lengths[i] for b in sampler for i in b]
    assert flat == sorted(lengths)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 50, 101])
def test_sampler_two_ranks_equal_counts_and_disjoint_when_dropping(n):
    lengths = random_lengths(n, seed=n)
    for drop_last in (False, True):
        ranks = [BucketingBatchSampler(lengths, 3000, seed=5, num_replicas=2, rank=r,
                                       drop_last=drop_last) for r in range(2)]
        for s in ranks:
            s.set_epoch(2)
        per_rank = [list(s) for s in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0]) == len(ranks[1])
        global_batches = ranks[0].global_batches()
        m = len(global_batches)
        used = Counter(i for batches in per_rank for b in batches for i in b)
        if drop_last:
            assert len(per_rank[0]) == m // 2
            # Disjoint, and exactly the utterances of the batches kept.
            assert set(used.values()) <= {1}
            kept = {i for b in global_batches[: m // 2 * 2] for i in b}
            assert set(used) == kept
        else:
            assert len(per_rank[0]) == -(-m // 2)
            # Everything covered; the only repeats are the padding batches from the start.
            assert set(used) == set(range(n))
            repeated = Counter(i for b in global_batches[: len(per_rank[0]) * 2 - m] for i in b)
            assert used - Counter(range(n)) == repeated
            if m % 2 == 0:
                assert set(used.values()) == {1}


def test_sampler_is_deterministic_per_seed_and_epoch():
    lengths = random_lengths(300)

    def batches(seed, epoch):
        s = BucketingBatchSampler(lengths, 4000, seed=seed, num_replicas=1, rank=0)
        s.set_epoch(epoch)
        return list(s)

    assert batches(0, 0) == batches(0, 0)
    assert batches(0, 1) == batches(0, 1)
    assert batches(0, 0) != batches(0, 1)
    assert batches(0, 0) != batches(1, 0)


@pytest.mark.parametrize("num_replicas", [1, 2])
def test_sampler_state_dict_resumes_exactly(num_replicas):
    lengths = random_lengths(200)
    for rank in range(num_replicas):
        sampler = BucketingBatchSampler(lengths, 4000, seed=7, num_replicas=num_replicas,
                                        rank=rank)
        sampler.set_epoch(4)
        full = list(sampler)
        it = iter(sampler)
        done = [next(it) for _ in range(5)]
        state = sampler.state_dict()
        assert state["epoch"] == 4 and state["batches_done"] == 5 and done == full[:5]

        resumed = BucketingBatchSampler(lengths, 4000, seed=7, num_replicas=num_replicas,
                                        rank=rank)
        resumed.load_state_dict(state)
        resumed.set_epoch(4)  # the training loop's usual call keeps the resume position
        assert len(resumed) == len(full) - 5
        assert list(resumed) == full[5:]
        assert resumed.state_dict()["batches_done"] == len(full)
        resumed.set_epoch(5)  # the next epoch starts from its beginning
        assert resumed.state_dict()["batches_done"] == 0
        assert len(list(resumed)) == len(resumed) > 0


def test_sampler_resume_with_other_settings_is_refused():
    lengths = random_lengths(50)
    state = BucketingBatchSampler(lengths, 4000, num_replicas=2, rank=0).state_dict()
    state["batches_done"] = 3
    with pytest.raises(UserError, match="cannot resume mid-epoch"):
        BucketingBatchSampler(lengths, 4000, num_replicas=1, rank=0).load_state_dict(state)


def test_sampler_overlong_utterance_gets_its_own_batch_with_a_warning():
    lengths = [100, 200, 5000, 150, 120]
    with pytest.warns(UserWarning, match="1 utterance.*longer than max_frames=1000"):
        sampler = BucketingBatchSampler(lengths, 1000, num_replicas=1, rank=0)
    batches = list(sampler)
    assert [2] in batches
    assert sorted(i for b in batches for i in b) == list(range(5))


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_frames"):
        BucketingBatchSampler([10], 0)
    with pytest.raises(ValueError, match="rank 2"):
        BucketingBatchSampler([10], 100, num_replicas=2, rank=2)


# --- collate -----------------------------------------------------------------------------


def test_collate_pads_with_zeros_and_reports_lengths(feats_dir):
    ds = SpeechDataset(feats_dir)
    items = [ds[i] for i in (0, 3, 1)]
    batch = collate(items)
    lengths = [it["feats"].shape[0] for it in items]
    assert batch["utts"] == [it["utt"] for it in items]
    assert batch["lengths"].dtype == torch.int64 and batch["lengths"].tolist() == lengths
    assert batch["feats"].shape == (3, max(lengths), 80)
    for row, it in enumerate(items):
        n = lengths[row]
        assert torch.equal(batch["feats"][row, :n], it["feats"])
        assert not batch["feats"][row, n:].any()
    assert batch["texts"] == [it["text"] for it in items]
    assert batch["speakers"] == [it["speaker"] for it in items]


# --- dataset from feats.scp --------------------------------------------------------------


def test_dataset_feats_equal_kaldi_io(feats_dir):
    ds = SpeechDataset(feats_dir)
    expected = dict(kaldi.archives.kaldi_io.read_mat_scp(str(feats_dir / "feats.scp")))
    texts = {u: e.value for u, e in kaldi.read_table(feats_dir / "text").items()}
    spk = {u: e.value for u, e in kaldi.read_table(feats_dir / "utt2spk").items()}
    assert ds.utts == sorted(expected) and len(ds) == 6 and ds.feat_dim == 80
    for i, utt in enumerate(ds.utts):
        item = ds[i]
        assert item["utt"] == utt and item["feats"].dtype == torch.float32
        np.testing.assert_array_equal(item["feats"].numpy(), expected[utt])
        assert ds.lengths[i] == expected[utt].shape[0]
        assert item["text"] == texts[utt] and item["speaker"] == spk[utt]
    assert SpeechDataset(feats_dir, transcripts=False)[0]["text"] is None


def test_speaker_cmvn_equals_numpy(feats_dir, tmp_path):
    data = copy_dir(feats_dir, tmp_path)
    compute_cmvn(data, mode="speaker")
    ds = SpeechDataset(data, cmvn="speaker")
    raw = dict(kaldi.read_matrices(f"scp:{data / 'feats.scp'}"))
    for spk in sorted(set(ds.speakers)):
        idx = [i for i, s in enumerate(ds.speakers) if s == spk]
        frames = np.concatenate([raw[ds.utts[i]] for i in idx]).astype(np.float64)
        mean, std = frames.mean(axis=0), frames.std(axis=0)
        for i in idx:
            expected = (raw[ds.utts[i]] - mean) / std
            np.testing.assert_allclose(ds[i]["feats"].numpy(), expected, atol=1e-4)
    means_only = SpeechDataset(data, cmvn="speaker", norm_vars=False)[0]["feats"].numpy()
    spk0 = np.concatenate([raw[u] for u, s in zip(ds.utts, ds.speakers, strict=True)
                           if s == ds.speakers[0]])
    np.testing.assert_allclose(means_only, raw[ds.utts[0]] - spk0.mean(axis=0), atol=1e-4)


def test_global_and_utterance_cmvn(feats_dir, tmp_path):
    data = copy_dir(feats_dir, tmp_path)
    raw = dict(kaldi.read_matrices(f"scp:{data / 'feats.scp'}"))
    compute_cmvn(data, mode="global")
    compute_cmvn(data, mode="utterance")
    all_frames = np.concatenate(list(raw.values())).astype(np.float64)
    g = SpeechDataset(data, cmvn="global")
    u = SpeechDataset(data, cmvn="utterance")
    for i, utt in enumerate(g.utts):
        np.testing.assert_allclose(g[i]["feats"].numpy(), (raw[utt] - all_frames.mean(0))
                                   / all_frames.std(0), atol=1e-4)
        per_utt = u[i]["feats"].numpy()
        np.testing.assert_allclose(per_utt.mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(per_utt.std(0), 1, atol=1e-3)
    # Utterance-keyed stats used as speaker stats: the message says what to do.
    with pytest.raises(UserError, match=r"utt2spk:1\).*looks utterance-keyed"):
        SpeechDataset(data, cmvn="speaker")


# --- errors name file, line and utterance ------------------------------------------------


def test_text_id_missing_from_feats_scp(feats_dir, tmp_path):
    data = copy_dir(feats_dir, tmp_path)
    with open(data / "text", "a") as f:
        f.write("zzz-utt999 a sentence without features\n")
    with pytest.raises(UserError) as e:
        SpeechDataset(data)
    assert f"{data / 'text'}:7: utterance 'zzz-utt999' is not in {data / 'feats.scp'}" \
        in str(e.value)


def test_missing_utt2num_frames(feats_dir, tmp_path):
    data = copy_dir(feats_dir, tmp_path)
    lines = (data / "utt2num_frames").read_text().splitlines()
    (data / "utt2num_frames").write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    utt = lines[2].split()[0]
    with pytest.raises(UserError, match=rf"feats.scp:3: utterance '{utt}' is missing from "
                                        rf".*utt2num_frames; rerun 'blspeech compute-feats"):
        SpeechDataset(data)
    (data / "utt2num_frames").unlink()
    with pytest.raises(UserError, match=r"utt2num_frames not found.*blspeech compute-feats"):
        SpeechDataset(data)


def test_nan_features_name_the_utterance(feats_dir, tmp_path):
    data = copy_dir(feats_dir, tmp_path)
    mats = dict(kaldi.read_matrices(f"scp:{data / 'feats.scp'}"))
    utts = sorted(mats)
    mats[utts[4]][10, 3] = np.nan
    kaldi.write_matrices(data / "feats.ark", data / "feats.scp", mats.items())
    ds = SpeechDataset(data)
    ds[3]  # the others are fine
    with pytest.raises(UserError, match=rf"feats.scp:5: utterance '{utts[4]}': features "
                                        r"contain NaN or inf in 1 of \d+ frames"):
        ds[4]


def test_speaker_without_cmvn_stats(feats_dir, tmp_path):
    data = copy_dir(feats_dir, tmp_path)
    compute_cmvn(data, mode="speaker")
    (data / "cmvn.scp").write_text((data / "cmvn.scp").read_text().splitlines()[0] + "\n")
    with pytest.raises(UserError, match=r"no statistics for speaker 'spk1' of utterance "
                                        r"'spk1-utt001' \(.*utt2spk:4\)"):
        SpeechDataset(data, cmvn="speaker")


def test_stale_utt2num_frames_is_caught_on_read(feats_dir, tmp_path):
    data = copy_dir(feats_dir, tmp_path)
    table = {u: e.value for u, e in kaldi.read_table(data / "utt2num_frames").items()}
    first = sorted(table)[0]
    table[first] = str(int(table[first]) + 7)
    kaldi.write_table(data / "utt2num_frames", table)
    with pytest.raises(UserError, match=rf"feats.scp:1: utterance '{first}': has \d+ frames "
                                        r"but utt2num_frames says"):
        SpeechDataset(data)[0]


# --- loaders -----------------------------------------------------------------------------


def _as_list(loader):
    return [(b["utts"], b["feats"], b["lengths"]) for b in loader]


def test_dataloader_workers_yield_the_same_batches(feats_dir):
    ds = SpeechDataset(feats_dir, cmvn="none")
    sampler = BucketingBatchSampler(ds.lengths, max_frames=700, seed=1, num_replicas=1, rank=0)
    serial = make_dataloader(ds, sampler, num_workers=0)
    parallel = make_dataloader(ds, sampler, num_workers=2)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        a, b = _as_list(serial), _as_list(parallel)
        assert len(a) == len(b) == len(serial) >= 3
        for (ua, fa, la), (ub, fb, lb) in zip(a, b, strict=True):
            assert ua == ub and torch.equal(fa, fb) and torch.equal(la, lb)


def test_dataloader_state_counts_delivered_batches_despite_prefetch(feats_dir):
    ds = SpeechDataset(feats_dir)
    sampler = BucketingBatchSampler(ds.lengths, max_frames=700, seed=2, num_replicas=1, rank=0)
    loader = make_dataloader(ds, sampler, num_workers=2)
    sampler.set_epoch(1)
    full = [b["utts"] for b in loader]
    it = iter(loader)
    first = [next(it)["utts"], next(it)["utts"]]
    state = loader.state_dict()
    del it
    assert first == full[:2]
    assert state["epoch"] == 1 and state["batches_done"] == 2
    assert sampler.state_dict()["batches_done"] > 2  # the workers prefetched further

    fresh_sampler = BucketingBatchSampler(ds.lengths, max_frames=700, seed=2,
                                          num_replicas=1, rank=0)
    fresh = make_dataloader(ds, fresh_sampler, num_workers=2)
    fresh.load_state_dict(state)
    fresh_sampler.set_epoch(1)
    assert [b["utts"] for b in fresh] == full[2:]
    assert fresh.state_dict()["batches_done"] == len(full)


def test_dataset_with_many_items_in_one_batch_never_exceeds_budget(feats_dir):
    ds = SpeechDataset(feats_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every utterance fits: no warning expected
        sampler = BucketingBatchSampler(ds.lengths, max_frames=2 * max(ds.lengths),
                                        num_replicas=1, rank=0)
    for batch in make_dataloader(ds, sampler):
        assert batch["feats"].shape[0] * batch["feats"].shape[1] <= 2 * max(ds.lengths)


# --- dataset computing features from audio -----------------------------------------------


def test_audio_lengths_match_features_with_segments_and_resampling(speech_data_dir_8k,
                                                                    tmp_path):
    data = copy_dir(speech_data_dir_8k, tmp_path)
    # Two segments per recording; the 8 kHz audio is resampled to the frontend's 16 kHz.
    rows = []
    for rec, entry in kaldi.read_table(data / "wav.scp").items():
        seconds = sf.info(entry.value).duration
        rows += [(f"{rec}-a", f"{rec} 0.00 {seconds / 2:.3f}"),
                 (f"{rec}-b", f"{rec} {seconds / 2:.3f} {seconds:.3f}")]
    kaldi.write_table(data / "segments", rows)
    spk = {u: e.value for u, e in kaldi.read_table(data / "utt2spk").items()}
    kaldi.write_table(data / "utt2spk", [(u, spk[u.rsplit("-", 1)[0]]) for u, _ in rows])
    ds = SpeechDataset(data, source="audio", frontend={"sample_rate": 16000}, transcripts=False)
    assert len(ds) == 12
    for i in range(len(ds)):
        assert ds[i]["feats"].shape == (ds.lengths[i], 80)
    # No configured rate: the audio's own (8 kHz), as compute-feats would use.
    native = SpeechDataset(data, source="audio", transcripts=False)
    assert native.frontend_config["sample_rate"] == 8000
    assert [native[i]["feats"].shape[0] for i in range(12)] == native.lengths
    assert all(abs(a - b) <= 1 for a, b in zip(native.lengths, ds.lengths, strict=True))


@pytest.mark.parametrize("fixture, frontend", [("speech_data_dir", {}),
                                               ("speech_data_dir_8k", {"num_mel_bins": 40,
                                                                       "sample_rate": 16000})])
def test_audio_features_equal_compute_feats(fixture, frontend, request, tmp_path):
    data = copy_dir(request.getfixturevalue(fixture), tmp_path)
    write_feats(data, **frontend)
    compute_cmvn(data, mode="speaker")
    stored = SpeechDataset(data, cmvn="speaker")
    on_the_fly = SpeechDataset(data, source="audio", cmvn="speaker")  # conf/fbank.yaml
    assert on_the_fly.utts == stored.utts and on_the_fly.lengths == stored.lengths
    assert on_the_fly.feat_dim == stored.feat_dim == frontend.get("num_mel_bins", 80)
    for i in range(len(stored)):
        a, b = on_the_fly[i], stored[i]
        assert (a["utt"], a["text"], a["speaker"]) == (b["utt"], b["text"], b["speaker"])
        np.testing.assert_allclose(a["feats"].numpy(), b["feats"].numpy(), rtol=0, atol=1e-5)
