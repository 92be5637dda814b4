"""Kaldi file formats: text tables, ark/scp archives and CMVN statistics.

Text tables (``wav.scp``, ``text``, ``utt2spk``, ...) are ``key value`` lines sorted by key
in C-locale (byte) order. Archives hold binary float matrices or int vectors after a
``key `` prefix; an scp line ``key path.ark:OFFSET`` points at the byte just after that
prefix (the ``\\0B`` binary marker), which is where Kaldi (and :func:`read_matrix`) starts
reading. The bytes are exactly Kaldi's, so files written here are read by Kaldi and by
``kaldi-io`` and vice versa. Binary float/double matrices and int vectors are parsed here
(strictly: a short read is an error, never a silently short matrix); compressed and text
matrices are handed to ``kaldi-io``.

Example:
    >>> write_matrices("feats.ark", "feats.scp", {"utt1": mat1, "utt2": mat2})  # doctest: +SKIP
    >>> for key, mat in read_matrices("scp:feats.scp"): ...                      # doctest: +SKIP
    >>> with ScpReader("feats.scp") as feats:                                    # doctest: +SKIP
    ...     mat = feats["utt2"]                               # one seek, one read
"""

from blspeech.io.kaldi.archives import (
    ScpReader,
    matrix_record,
    read_int_vector,
    read_int_vectors,
    read_matrices,
    read_matrix,
    write_int_vectors,
    write_matrices,
    write_matrix,
)
from blspeech.io.kaldi.cmvn import cmvn_from_stats, cmvn_stats
from blspeech.io.kaldi.tables import (
    KaldiFormatError,
    LineProblem,
    TableEntry,
    format_table,
    read_table,
    scan_lines,
    scan_table,
    write_table,
)

__all__ = [
    "KaldiFormatError",
    "LineProblem",
    "ScpReader",
    "TableEntry",
    "cmvn_from_stats",
    "cmvn_stats",
    "format_table",
    "matrix_record",
    "read_int_vector",
    "read_int_vectors",
    "read_matrices",
    "read_matrix",
    "read_table",
    "scan_lines",
    "scan_table",
    "write_int_vectors",
    "write_matrices",
    "write_matrix",
    "write_table",
]
