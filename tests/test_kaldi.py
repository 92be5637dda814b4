"""Kaldi tables, ark/scp archives and CMVN stats, checked against kaldi-io and the raw bytes."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re

import numpy as np
import pytest

from blspeech.io import fileio, kaldi
from blspeech.io.kaldi import KaldiFormatError

with contextlib.redirect_stderr(io.StringIO()):
    import kaldi_io


def _mats(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Unsorted insertion order, mixed shapes and dtypes, an empty matrix, a UTF-8 key.
    return {
        "utt-c": rng.standard_normal((7, 5)).astype(np.float32),
        "utt-a": rng.standard_normal((3, 5)),  # float64 -> stored as DM
        "utt-b": rng.standard_normal((1, 80)).astype(np.float32),
        "utt-empty": np.zeros((0, 5), dtype=np.float32),
        "utt-é": rng.standard_normal((2, 2)).astype(np.float32),
    }


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.fixture
def ark(tmp_path):
    mats = _mats()
    offsets = kaldi.write_matrices(tmp_path / "feats.ark", tmp_path / "feats.scp", mats)
    return tmp_path, mats, offsets


def test_scp_offsets_point_at_the_binary_marker(ark):
    tmp_path, mats, offsets = ark
    data = (tmp_path / "feats.ark").read_bytes()
    scp = kaldi.read_table(tmp_path / "feats.scp")
    assert list(scp) == sorted(mats, key=str.encode)  # scp written C-sorted
    for key, entry in scp.items():
        assert entry.value == offsets[key]
        path, offset = entry.value.rsplit(":", 1)
        offset = int(offset)
        assert path == str(tmp_path / "feats.ark")
        assert data[offset:offset + 2] == b"\0B"
        assert data[offset - len(key.encode()) - 1:offset] == key.encode() + b" "
        kind = b"DM " if mats[key].dtype == np.float64 else b"FM "
        assert data[offset + 2:offset + 5] == kind


def test_our_ark_and_scp_read_byte_exact_by_kaldi_io(ark):
    tmp_path, mats, _ = ark
    ascii_keys = {k for k in mats if k.isascii()}  # kaldi-io decodes keys as latin-1
    from_ark = dict(kaldi_io.read_mat_ark(str(tmp_path / "feats.ark")))
    from_scp = dict(kaldi_io.read_mat_scp(str(tmp_path / "feats.scp")))
    for key in ascii_keys:
        assert _same(from_ark[key], mats[key]), key
        assert _same(from_scp[key], mats[key]), key


def test_kaldi_io_ark_read_by_us(tmp_path):
    mats = {k: v for k, v in _mats(1).items() if k.isascii()}
    vecs = {"u1": np.array([3, 1, 4, 1, 5], dtype=np.int32), "u2": np.array([], np.int32)}
    with open(tmp_path / "k.ark", "wb") as f:
        for key, mat in mats.items():
            kaldi_io.write_mat(f, mat, key=key)
    with open(tmp_path / "ali.ark", "wb") as f:
        for key, vec in vecs.items():
            kaldi_io.write_vec_int(f, vec, key=key)
    ours = list(kaldi.read_matrices(f"ark:{tmp_path / 'k.ark'}"))
    assert [k for k, _ in ours] == list(mats)  # archive order
    for key, mat in ours:
        assert _same(mat, mats[key])
        assert mat.flags.writeable
    got = dict(kaldi.read_int_vectors(f"ark:{tmp_path / 'ali.ark'}"))
    assert got.keys() == vecs.keys()
    for key in vecs:
        assert _same(got[key], vecs[key])


def test_random_access_subset_in_any_order(ark):
    tmp_path, mats, offsets = ark
    order = ["utt-empty", "utt-c", "utt-é", "utt-a"]
    got = list(kaldi.read_matrices(f"scp:{tmp_path / 'feats.scp'}", keys=order))
    assert [k for k, _ in got] == order
    for key, mat in got:
        assert _same(mat, mats[key])
    with kaldi.ScpReader(tmp_path / "feats.scp") as reader:
        assert len(reader) == len(mats) and "utt-b" in reader
        for key in reversed(order):
            assert _same(reader[key], mats[key])
        with pytest.raises(KaldiFormatError, match="no entry for key 'nope'"):
            reader["nope"]
    for key in order:
        assert _same(kaldi.read_matrix(offsets[key]), mats[key])


def test_reading_by_offset_really_seeks(ark):
    # Corrupt one entry in the middle: a sequential reader stops there, a seeking reader
    # reads every other key and names the broken one with its scp line.
    tmp_path, mats, offsets = ark
    ark_path = tmp_path / "feats.ark"
    data = bytearray(ark_path.read_bytes())
    broken = int(offsets["utt-b"].rsplit(":", 1)[1])
    data[broken + 2:broken + 5] = b"XX "
    ark_path.write_bytes(bytes(data))
    others = [k for k in mats if k != "utt-b"]
    for key, mat in kaldi.read_matrices(f"scp:{tmp_path / 'feats.scp'}", keys=others):
        assert _same(mat, mats[key])
    line = kaldi.read_table(tmp_path / "feats.scp")["utt-b"].line
    with pytest.raises(KaldiFormatError) as e:
        list(kaldi.read_matrices(f"scp:{tmp_path / 'feats.scp'}", keys=["utt-b"]))
    assert f"feats.scp:{line}: key 'utt-b'" in str(e.value)
    assert "unknown matrix type" in str(e.value)
    with pytest.raises(KaldiFormatError, match="corrupt archive.*'utt-b' after last good key"):
        list(kaldi.read_matrices(f"ark:{ark_path}"))


def test_ranges_are_inclusive_like_kaldi(ark):
    tmp_path, mats, offsets = ark
    mat = mats["utt-c"]
    assert _same(kaldi.read_matrix(offsets["utt-c"] + "[2:4]"), mat[2:5])
    assert _same(kaldi.read_matrix(offsets["utt-c"] + "[1:6,0:1]"), mat[1:7, 0:2])
    with pytest.raises(KaldiFormatError, match="outside a 7x5 matrix"):
        kaldi.read_matrix(offsets["utt-c"] + "[0:7]")


def test_pipes(ark, tmp_path):
    _, mats, _ = ark
    ark_path = tmp_path / "feats.ark"
    got = dict(kaldi.read_matrices(f"ark:cat {ark_path} |"))
    assert got.keys() == mats.keys()
    for key in mats:
        assert _same(got[key], mats[key])
    with gzip.open(tmp_path / "feats.ark.gz", "wb") as f:
        f.write(ark_path.read_bytes())
    got = dict(kaldi.read_matrices(f"ark:gunzip -c {tmp_path / 'feats.ark.gz'} |"))
    assert _same(got["utt-a"], mats["utt-a"])
    # Stopping early kills the command instead of waiting for it.
    for key, _ in kaldi.read_matrices(f"ark:cat {ark_path} {ark_path} {ark_path} |"):
        assert key == "utt-c"
        break
    # A failing command is an error naming the command and its stderr, not an empty archive.
    with pytest.raises(KaldiFormatError, match=r"command 'cat /no/such.ark' failed.*No such"):
        list(kaldi.read_matrices("ark:cat /no/such.ark |"))
    # A whole matrix from a pipe (the scp form 'cmd |').
    one = tmp_path / "one.ark"
    kaldi.write_matrices(one, None, {"x": mats["utt-a"]})
    offset = len(b"x ")
    assert _same(kaldi.read_matrix(f"tail -c +{offset + 1} {one} |"), mats["utt-a"])


def test_truncated_ark_names_file_and_last_good_key(ark):
    tmp_path, mats, offsets = ark
    data = (tmp_path / "feats.ark").read_bytes()
    # Keys in the archive are in insertion order: utt-c, utt-a, utt-b, ...; cut inside utt-b.
    cut = int(offsets["utt-b"].rsplit(":", 1)[1]) + 40
    bad = tmp_path / "cut.ark"
    bad.write_bytes(data[:cut])
    with pytest.raises(KaldiFormatError) as e:
        list(kaldi.read_matrices(f"ark:{bad}"))
    message = str(e.value)
    assert str(bad) in message and "truncated" in message
    assert "'utt-b' after last good key 'utt-a'" in message
    assert "\n" not in message
    # Cut inside the header of the first entry.
    bad.write_bytes(data[:8])
    with pytest.raises(KaldiFormatError, match="truncated archive at byte 0, entry 'utt-c' in "
                                               "its first entry"):
        list(kaldi.read_matrices(f"ark:{bad}"))
    # Cut inside a key.
    bad.write_bytes(data[:int(offsets["utt-a"].rsplit(":", 1)[1]) - 3])
    with pytest.raises(KaldiFormatError, match="ends inside a key"):
        list(kaldi.read_matrices(f"ark:{bad}"))


def test_scp_into_truncated_ark_names_scp_line_and_key(ark):
    tmp_path, mats, offsets = ark
    ark_path = tmp_path / "feats.ark"
    cut = int(offsets["utt-b"].rsplit(":", 1)[1]) + 40
    ark_path.write_bytes(ark_path.read_bytes()[:cut])
    scp = kaldi.read_table(tmp_path / "feats.scp")
    # utt-a and utt-c lie before the cut and still read.
    got = dict(kaldi.read_matrices(f"scp:{tmp_path / 'feats.scp'}", keys=["utt-a", "utt-c"]))
    assert _same(got["utt-c"], mats["utt-c"])
    with pytest.raises(KaldiFormatError) as e:
        list(kaldi.read_matrices(f"scp:{tmp_path / 'feats.scp'}"))
    message = str(e.value)
    assert message.startswith(f"{tmp_path / 'feats.scp'}:{scp['utt-b'].line}: key 'utt-b': ")
    assert "truncated" in message
    # An entry past the end of the file.
    with pytest.raises(KaldiFormatError, match="truncated data: no matrix data"):
        kaldi.read_matrix(f"{ark_path}:{cut + 1000}")
    with pytest.raises(KaldiFormatError, match="file not found"):
        kaldi.read_matrix(f"{tmp_path / 'nope.ark'}:12")


def test_int_vectors_round_trip_with_kaldi_io(tmp_path):
    vecs = {"b": np.array([7, -1, 2**31 - 1], dtype=np.int64), "a": np.arange(100),
            "z": np.array([], dtype=np.int32)}
    kaldi.write_int_vectors(tmp_path / "ali.ark", tmp_path / "ali.scp", vecs)
    theirs = dict(kaldi_io.read_vec_int_ark(str(tmp_path / "ali.ark")))
    ours = dict(kaldi.read_int_vectors(f"scp:{tmp_path / 'ali.scp'}", keys=["z", "b", "a"]))
    for key, vec in vecs.items():
        assert np.array_equal(theirs[key], vec) and np.array_equal(ours[key], vec)
        assert ours[key].dtype == np.int32
    # Same bytes as kaldi-io's own (element-by-element) writer.
    with open(tmp_path / "ref.ark", "wb") as f:
        for key, vec in vecs.items():
            kaldi_io.write_vec_int(f, vec.astype(np.int32), key=key)
    assert (tmp_path / "ref.ark").read_bytes() == (tmp_path / "ali.ark").read_bytes()
    with pytest.raises(ValueError, match="int32"):
        kaldi.write_int_vectors(tmp_path / "x.ark", None, {"a": np.array([2**31])})
    with pytest.raises(ValueError, match="integer"):
        kaldi.write_int_vectors(tmp_path / "x.ark", None, {"a": np.array([1.5])})


def test_text_format_matrix_via_kaldi_io(tmp_path):
    (tmp_path / "t.ark").write_text("u1  [\n  1 2 3\n  4 5 6 ]\nu2  [\n  7 8 9 ]\n")
    got = dict(kaldi.read_matrices(f"ark:{tmp_path / 't.ark'}"))
    assert got["u1"].tolist() == [[1, 2, 3], [4, 5, 6]] and got["u2"].tolist() == [[7, 8, 9]]


def test_cmvn_stats_match_numpy_and_kaldi_layout(tmp_path):
    rng = np.random.default_rng(3)
    feats = [rng.standard_normal((n, 4)).astype(np.float32) * 3 + 1 for n in (50, 17, 1)]
    stats = kaldi.cmvn_stats(feats)
    allf = np.concatenate(feats).astype(np.float64)
    assert stats.shape == (2, 5) and stats.dtype == np.float64
    np.testing.assert_allclose(stats[0, :4], allf.sum(0), rtol=1e-12)
    np.testing.assert_allclose(stats[1, :4], (allf ** 2).sum(0), rtol=1e-12)
    assert stats[0, 4] == 68 and stats[1, 4] == 0
    mean, std = kaldi.cmvn_from_stats(stats)
    np.testing.assert_allclose(mean, allf.mean(0), rtol=1e-10)
    np.testing.assert_allclose(std, allf.std(0), rtol=1e-8)
    # Stored as a double matrix, as compute-cmvn-stats does, and readable by kaldi-io.
    kaldi.write_matrices(tmp_path / "cmvn.ark", tmp_path / "cmvn.scp", {"spk1": stats})
    data = (tmp_path / "cmvn.ark").read_bytes()
    assert data.startswith(b"spk1 \0BDM ")
    (key, theirs), = kaldi_io.read_mat_scp(str(tmp_path / "cmvn.scp"))
    assert key == "spk1" and _same(theirs, stats)
    with pytest.raises(ValueError, match="zero frame count"):
        kaldi.cmvn_from_stats(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="dim"):
        kaldi.cmvn_stats([np.zeros((2, 3)), np.zeros((2, 4))])


def test_table_problems_have_file_and_line(tmp_path):
    path = tmp_path / "text"
    path.write_bytes(b"a hello world\n"
                     b"c\tsee\n"                # tab-separated is fine
                     b"b bee\n"                 # 3: unsorted
                     b"c again\n"               # 4: duplicate
                     b"\n"                      # 5: empty line
                     b"d\n"                     # 6: no value
                     b"e caf\xe9\n"             # 7: latin-1, not UTF-8
                     b"f form\x0cfeed\n"        # a form feed must not shift line numbers
                     b"g end\n")
    entries, problems = kaldi.scan_table(path)
    assert entries["c"] == kaldi.TableEntry("c", "see", 2)
    assert entries["f"].value == "form\x0cfeed" and entries["g"].line == 9
    assert problems == [
        f"{path}:3: key 'b': not sorted (comes after 'c'); sort with 'LC_ALL=C sort' or "
        "'blspeech fix-data-dir'",
        f"{path}:4: key 'c': duplicate key (first on line 2)",
        f"{path}:5: empty line",
        f"{path}:6: key 'd': has no value",
        f"{path}:7: not UTF-8 text (unexpected end of data at column 6)",
    ]
    _, problems = kaldi.scan_table(path, allow_empty_value=True, check_sorted=False)
    assert [p.split(":")[1] for p in problems] == ["4", "5", "7"]
    with pytest.raises(KaldiFormatError, match=re.escape(f"{path}:3: key 'b': not sorted")):
        kaldi.read_table(path)
    with pytest.raises(KaldiFormatError, match="file not found"):
        kaldi.read_table(tmp_path / "missing")


def test_write_table_is_sorted_checked_and_atomic(tmp_path):
    path = tmp_path / "utt2spk"
    kaldi.write_table(path, {"b": "s1", "a": "s2", "B": "s3", "a-1": "s2", "é": "x", "e": ""})
    assert path.read_text() == "B s3\na s2\na-1 s2\nb s1\ne\né x\n"  # C (byte) order
    before = path.read_bytes()

    def items():
        yield "z", "1"
        raise RuntimeError("disk full")

    for bad in ({"has space": "x"}, {"k": "two\nlines"}):
        with pytest.raises(ValueError):
            kaldi.write_table(path, bad)
    with pytest.raises(RuntimeError):
        kaldi.write_table(path, items())
    with pytest.raises(RuntimeError):
        with fileio.atomic_write(path) as f:
            f.write("half")
            raise RuntimeError("crash")
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["utt2spk"]  # no temp files left


def test_append_resumes_and_failure_leaves_ark_intact(tmp_path):
    ark, scp = tmp_path / "a.ark", tmp_path / "a.scp"
    m = _mats()
    kaldi.write_matrices(ark, scp, {"utt-c": m["utt-c"]})
    kaldi.write_matrices(ark, scp, {"utt-a": m["utt-a"]}, append=True)
    size = ark.stat().st_size

    def failing():
        yield "utt-b", m["utt-b"]
        yield "bad", np.zeros(3)  # 1-D: not a matrix

    with pytest.raises(ValueError, match="2-D"):
        kaldi.write_matrices(ark, scp, failing(), append=True)
    assert ark.stat().st_size == size
    got = dict(kaldi.read_matrices(f"scp:{scp}"))
    assert set(got) == {"utt-a", "utt-c"} and _same(got["utt-a"], m["utt-a"])
    assert dict(kaldi_io.read_mat_ark(str(ark))).keys() == {"utt-a", "utt-c"}
    with pytest.raises(ValueError, match="duplicate archive key"):
        kaldi.write_matrices(tmp_path / "d.ark", None, [("x", m["utt-a"]), ("x", m["utt-a"])])
    with pytest.raises(ValueError, match="invalid archive key"):
        kaldi.write_matrices(tmp_path / "d.ark", None, {"x y": m["utt-a"]})
    assert not (tmp_path / "d.ark").exists()


def test_bad_rspecifier():
    with pytest.raises(KaldiFormatError, match="expected 'scp:FILE'"):
        list(kaldi.read_matrices("feats.scp"))
    with pytest.raises(KaldiFormatError, match="archive /no/such.ark: file not found"):
        list(kaldi.read_matrices("ark:/no/such.ark"))
