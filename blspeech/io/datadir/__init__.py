"""Kaldi data directories: load, validate, fix, subset, combine and speed-perturb them.

A data dir is a folder of ``key value`` tables (DESIGN.md section 5): ``wav.scp``
(recording -> path or ``cmd |``), ``text``, ``utt2spk``, ``spk2utt`` and optionally
``segments`` (utterance -> recording start end), ``reco2file_and_channel``, ``reco2dur``,
``feats.scp``, ``cmvn.scp``, ``utt2dur``, ``utt2num_frames`` and a few more. Utterances
are the keys of ``segments`` when it exists, else of ``wav.scp``.

The functions mirror Kaldi's ``utils/`` scripts (``validate_data_dir.sh``,
``fix_data_dir.sh``, ``subset_data_dir.sh``, ``combine_data.sh``,
``perturb_data_dir_speed_3way.sh``). Every table is written sorted in C-locale byte order,
all tables of a directory are staged as temp files and renamed only when all of them are
complete, and ``spk2utt`` is always regenerated from ``utt2spk``.

Example:
    >>> problems = validate_data_dir("data/train")                 # doctest: +SKIP
    >>> for p in problems: print(p)                                # doctest: +SKIP
    data/train/wav.scp:12: utt 'spk1-utt007': missing from utt2spk
    >>> fix_data_dir("data/train")["utterances"]                   # doctest: +SKIP
    {'before': 120, 'after': 119}
    >>> perturb_speed("data/train", "data/train_sp")               # doctest: +SKIP
"""

from blspeech.io.datadir.core import (
    COPIED_FILES,
    FEATS_CONF,
    FEATURE_TABLES,
    RECO_TABLES,
    REQUIRED,
    SPK_TABLES,
    TABLES,
    UTT_TABLES,
    DataDir,
    Problem,
)
from blspeech.io.datadir.ops import (
    combine_data_dirs,
    fix_data_dir,
    perturb_speed,
    speed_command,
    speed_prefix,
    subset_data_dir,
)
from blspeech.io.datadir.validate import check_data_dir, validate_data_dir

__all__ = [
    "COPIED_FILES",
    "FEATS_CONF",
    "FEATURE_TABLES",
    "RECO_TABLES",
    "REQUIRED",
    "SPK_TABLES",
    "TABLES",
    "UTT_TABLES",
    "DataDir",
    "Problem",
    "check_data_dir",
    "combine_data_dirs",
    "fix_data_dir",
    "perturb_speed",
    "speed_command",
    "speed_prefix",
    "subset_data_dir",
    "validate_data_dir",
]
