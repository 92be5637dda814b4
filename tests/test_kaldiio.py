"""kaldiio (what ESPnet and lhotse read Kaldi archives with) and blspeech read each other's
archives: matrices, int vectors, scp offsets and compressed matrices."""

from __future__ import annotations

import numpy as np
import pytest

from blspeech.io import kaldi

kaldiio = pytest.importorskip("kaldiio")


def _mats(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mats = {f"utt{k:02d}": rng.standard_normal((rng.integers(1, 40), 13)).astype(np.float32)
            for k in range(6)}
    mats["utt-double"] = rng.standard_normal((5, 3))  # float64: Kaldi's DM
    mats["utt-empty"] = np.zeros((0, 13), np.float32)
    return mats


def test_kaldiio_reads_our_matrices_by_ark_and_by_scp(tmp_path):
    mats = _mats()
    kaldi.write_matrices(tmp_path / "feats.ark", tmp_path / "feats.scp", mats)
    from_ark = dict(kaldiio.load_ark(str(tmp_path / "feats.ark")))
    from_scp = kaldiio.load_scp(str(tmp_path / "feats.scp"))
    assert set(from_ark) == set(from_scp) == set(mats)
    for key, mat in mats.items():
        for got in (from_ark[key], from_scp[key]):
            assert got.dtype == mat.dtype and got.shape == mat.shape, key
            np.testing.assert_array_equal(got, mat)


def test_we_read_kaldiio_matrices_by_ark_and_by_scp(tmp_path):
    mats = _mats(1)
    kaldiio.save_ark(str(tmp_path / "k.ark"), mats, scp=str(tmp_path / "k.scp"))
    from_ark = dict(kaldi.read_matrices(f"ark:{tmp_path / 'k.ark'}"))
    from_scp = dict(kaldi.read_matrices(f"scp:{tmp_path / 'k.scp'}"))
    for key, mat in mats.items():
        np.testing.assert_array_equal(from_ark[key], mat)
        np.testing.assert_array_equal(from_scp[key], mat)
        # An scp line is 'key path:offset': the offset kaldiio wrote seeks as Kaldi's does.
    table = kaldi.read_table(tmp_path / "k.scp", check_sorted=False)
    for key, entry in table.items():
        np.testing.assert_array_equal(kaldi.read_matrix(entry.value), mats[key])


def test_int_vectors_both_ways(tmp_path):
    rng = np.random.default_rng(2)
    alis = {f"utt{k}": rng.integers(0, 300, rng.integers(1, 50)).astype(np.int32)
            for k in range(5)}
    kaldi.write_int_vectors(tmp_path / "ali.ark", tmp_path / "ali.scp", alis)
    theirs = kaldiio.load_scp(str(tmp_path / "ali.scp"))
    for key, vec in alis.items():
        np.testing.assert_array_equal(theirs[key], vec)
    kaldiio.save_ark(str(tmp_path / "k.ark"), alis, scp=str(tmp_path / "k.scp"))
    ours = dict(kaldi.read_int_vectors(f"scp:{tmp_path / 'k.scp'}"))
    for key, vec in alis.items():
        np.testing.assert_array_equal(ours[key], vec)


# Kaldi's CompressionMethod: kSpeechFeature ('CM', uint8 with column percentiles),
# kTwoByteAuto ('CM2', uint16), kOneByteAuto ('CM3', uint8).
@pytest.mark.parametrize(("method", "marker", "levels"),
                         [(2, b"CM ", 255), (3, b"CM2", 65535), (5, b"CM3", 255)])
def test_we_read_kaldiio_compressed_matrices(tmp_path, method, marker, levels):
    mats = {k: v for k, v in _mats(3).items() if v.dtype == np.float32 and len(v)}
    kaldiio.save_ark(str(tmp_path / "c.ark"), mats, scp=str(tmp_path / "c.scp"),
                     compression_method=method)
    assert b"\0B" + marker in (tmp_path / "c.ark").read_bytes()
    ours = dict(kaldi.read_matrices(f"scp:{tmp_path / 'c.scp'}"))
    theirs = kaldiio.load_scp(str(tmp_path / "c.scp"))
    for key, mat in mats.items():
        assert ours[key].shape == mat.shape
        # The same decompression as kaldiio's, and near the original within the
        # quantization step of each column's range.
        np.testing.assert_allclose(ours[key], theirs[key], rtol=0, atol=1e-6)
        step = (mat.max() - mat.min()) / levels
        assert np.abs(ours[key] - mat).max() <= step, key
