"""The telephony_mini corpus: 8 kHz telephone speech built from Debian packages only.

Four Kaldi data dirs under ``DATA_DIR``:

* ``train`` and ``dev``: synthesized speech (espeak-ng and flite voices, each voice one
  speaker) reading template sentences and Asterisk's prompt sentences, plus a share of
  Asterisk's real recordings (speaker ``ast_allison``);
* ``test_real``: real Asterisk recordings of prompts whose sentences occur nowhere in
  train or dev, neither recorded nor synthesized;
* ``test_synth``: held-out voices (:data:`HELD_OUT_SPEAKERS`) reading held-out sentences.

Sentences are kept apart across splits (train, dev and the two test sets share no
transcript) and :func:`check_hygiene` verifies it, with the held-out voices, before any
table is written. Audio goes to ``DATA_DIR/wav/`` as 16-bit 8 kHz wav files; each split
dir gets ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``, ``utt2dur`` and ``spk2gender``,
and ``DATA_DIR/corpus_stats.json`` sums up hours and utterances per split.

The build is deterministic given its settings and resumable: wav files that exist are
complete (written under a temp name, then renamed) and are kept; tables and statistics
are rewritten only when their content changes, so a second run with the same settings
changes nothing; files of an earlier, different build are removed.

Example:
    >>> stats = build_corpus("data", CorpusConfig(num_train=300), nj=2)   # doctest: +SKIP
    >>> stats["splits"]["train"]["hours"]                                  # doctest: +SKIP
    0.33
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from blspeech.corpora.synth import (
    Channel,
    SynthJob,
    Voice,
    all_voices,
    job_digest,
    run_job,
    voice_for_speaker,
)
from blspeech.corpora.telephony_text import (
    ASTERISK_SOUND_DIR,
    ASTERISK_TRANSCRIPTS,
    DEFAULT_TEXT_DIR,
    Prompt,
    Sentence,
    SentenceGenerator,
    contains_phrase,
    load_prompts,
)
from blspeech.errors import UserError
from blspeech.io.datadir import DataDir
from blspeech.io.datadir.core import format_seconds
from blspeech.io.fileio import atomic_write

SPLITS = ("train", "dev", "test_real", "test_synth")
TRAINING_SPLITS = ("train", "dev")
TEST_SPLITS = ("test_real", "test_synth")
#: Asterisk's one speaker.
REAL_SPEAKER = "ast_allison"
#: Voices heard only in test_synth: one per espeak-ng accent family, both genders, and
#: one whole flite voice (a different synthesis technique than espeak-ng's).
HELD_OUT_SPEAKERS = ("es_en_029_f4", "es_en_croak", "es_en_gb_scotland_m6", "es_en_gb_x_gbcwmd_f3",
                     "es_en_gb_x_rp_f2", "es_en_us_m2", "es_en_us_nyc_m4", "fl_rms")
#: Prompts of at least this many words can be held out for test_real (single words like
#: "november" make a poor sentence test and recur in other prompts' sentences).
MIN_TEST_REAL_WORDS = 3
#: Sizes of ``--quick``: a corpus for smoke runs of the recipe.
QUICK_SIZES = {"num_train": 300, "num_dev": 40, "num_test_synth": 40, "num_test_real": 40}
_SPLIT_TAGS = {"train": "tr", "dev": "dv", "test_synth": "ts"}
_TABLES = ("wav.scp", "text", "utt2spk", "utt2dur", "spk2gender")


class HygieneError(AssertionError):
    """Test material leaked into training material (sentences or voices)."""


@dataclass(frozen=True)
class CorpusConfig:
    """Sizes and settings of the corpus; the defaults are the recipe's full corpus."""

    num_train: int = 2500
    num_dev: int = 200
    num_test_synth: int = 150
    num_test_real: int = 100
    seed: int = 1
    #: Share of train and dev that are real Asterisk recordings (as many as there are).
    real_share: float = 0.15
    #: Share of synthesized train/dev utterances that read Asterisk prompt sentences.
    prompt_share: float = 0.15
    #: Share of synthesized utterances spoken by flite voices (the rest by espeak-ng).
    flite_share: float = 0.2
    held_out_speakers: tuple[str, ...] = HELD_OUT_SPEAKERS
    channel: Channel = field(default_factory=Channel)
    max_prompt_seconds: float = 20.0
    sound_dir: str = str(ASTERISK_SOUND_DIR)
    transcripts: str = str(ASTERISK_TRANSCRIPTS)
    text_dir: str = str(DEFAULT_TEXT_DIR)

    def __post_init__(self) -> None:
        for name in ("num_train", "num_dev", "num_test_synth", "num_test_real"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1")
        for name in ("real_share", "prompt_share", "flite_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"--{name.replace('_', '-')} must be between 0 and 1")


@dataclass(frozen=True)
class Utterance:
    """One planned utterance: a real recording (``source``) or a synthesis ``job``."""

    utt: str
    speaker: str
    gender: str
    text: str
    wav: str
    job: SynthJob | None = None
    source: str | None = None


@dataclass
class CorpusPlan:
    """What a build makes: the utterances of each split and what must stay out of training."""

    #: Utterances of each split, sorted by utterance id (C order).
    splits: dict[str, list[Utterance]]
    #: Test sentences and the sentences of test_real prompts: no train or dev transcript
    #: may contain one of them.
    held_out_phrases: list[str]
    #: Asterisk prompts left out, ``{key: why}``.
    excluded_prompts: dict[str, str]


def _unit(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts`` (stable across runs and Python versions)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:12], 16) / 16**12


def _take_groups(groups: list[str], sizes: Mapping[str, int], want: int,
                 exact: bool) -> list[str]:
    """Texts from ``groups`` (in order) whose recordings add up to ``want`` (or more)."""
    chosen, total = [], 0
    for text in groups:
        if total >= want:
            break
        if exact and total + sizes[text] > want:
            continue
        chosen.append(text)
        total += sizes[text]
    return chosen


def _assign_voices(sentences: list[Sentence], voices: list[Voice], flite_share: float,
                   rng: random.Random) -> list[tuple[Sentence, Voice]]:
    """Pair sentences with voices: ``flite_share`` to flite, round-robin within engines."""
    by_engine = {e: [v for v in voices if v.engine == e] for e in ("espeak", "flite")}
    for pool in by_engine.values():
        rng.shuffle(pool)
    n_flite = round(flite_share * len(sentences)) if by_engine["flite"] else 0
    if not by_engine["espeak"]:
        n_flite = len(sentences)
    order = list(range(len(sentences)))
    rng.shuffle(order)
    engines = {i: ("flite" if k < n_flite else "espeak") for k, i in enumerate(order)}
    counters = {"espeak": 0, "flite": 0}
    pairs = []
    for i, sentence in enumerate(sentences):
        engine = engines[i]
        pool = by_engine[engine]
        pairs.append((sentence, pool[counters[engine] % len(pool)]))
        counters[engine] += 1
    return pairs


def _synth_utterances(split: str, pairs: list[tuple[Sentence, Voice]], config: CorpusConfig,
                      wav_dir: Path) -> list[Utterance]:
    out = []
    for i, (sentence, voice) in enumerate(pairs):
        spk = voice.speaker
        utt = f"{spk}-{_SPLIT_TAGS[split]}{i:05d}"
        rng = random.Random(f"{config.seed}/{utt}")
        # A speaker keeps its own pace and pitch; each utterance varies a little around it.
        rate = (0.85 + 0.25 * _unit("rate", spk)) * rng.uniform(0.93, 1.07)
        pitch = round(30 + 40 * _unit("pitch", spk) + rng.uniform(-6, 6))
        job = SynthJob(utt, voice, sentence.spoken, round(rate, 3), min(99, max(0, pitch)),
                       config.channel, int(_unit("channel", config.seed, utt) * 2**31))
        job = replace(job, path=str(wav_dir / split / spk / f"{utt}-{job_digest(job)}.wav"))
        out.append(Utterance(utt, spk, voice.gender, sentence.text, job.path, job=job))
    return out


def _real_utterance(prompt: Prompt, wav_dir: Path) -> Utterance:
    name = prompt.key.replace("/", "_")
    return Utterance(f"{REAL_SPEAKER}-{name}", REAL_SPEAKER, "f", prompt.text,
                     str(wav_dir / "asterisk" / f"{name}.wav"), source=prompt.path)


def _cycle(texts: list[Sentence], n: int, rng: random.Random) -> list[Sentence]:
    """``n`` sentences going through ``texts`` in a shuffled order, again and again."""
    if not texts:
        return []
    order = list(texts)
    rng.shuffle(order)
    return [order[i % len(order)] for i in range(n)]


def _split_prompts(groups: dict[str, list[Prompt]], generator: SentenceGenerator,
                   config: CorpusConfig, rng: random.Random,
                   log: Callable[[str], None]) -> tuple[dict[str, list[str]],
                                                        dict[str, list[Prompt]]]:
    """Prompt transcripts of each split, and the real recordings of train and dev."""
    sizes = {text: len(ps) for text, ps in groups.items()}
    # test_real: prompts none of whose sentences occurs in any other prompt's transcript
    # (so nothing else has to be given up), taken as whole groups of identically
    # transcribed prompts, so that no copy stays behind for training.
    candidates = [t for t in sorted(groups) if len(t.split()) >= MIN_TEST_REAL_WORDS
                  and not any(contains_phrase(other, x) for x in _pieces(groups[t])
                              for other in groups if other != t)]
    rng.shuffle(candidates)
    # Prompts whose every word is also said elsewhere (other prompts, template sentences)
    # come first: test_real then measures acoustics more than unknown words.
    known = generator.vocabulary()
    word_groups = _count(w for t in groups for w in set(t.split()))
    candidates.sort(key=lambda t: any(w not in known and word_groups[w] < 2 for w in t.split()))
    test_texts = _take_groups(candidates, sizes, config.num_test_real, exact=True)
    if sum(sizes[t] for t in test_texts) < config.num_test_real:
        raise UserError(f"--num-test-real {config.num_test_real}: only "
                        f"{sum(sizes[t] for t in test_texts)} Asterisk prompts of "
                        f"{MIN_TEST_REAL_WORDS}+ words can be held out")
    rest = sorted(set(groups) - set(test_texts))
    rng.shuffle(rest)
    # dev gets just the prompts it needs: its real share, or one for synthesized readings.
    n_real = {s: round(config.real_share * getattr(config, f"num_{s}")) for s in TRAINING_SPLITS}
    need_dev_prompt = config.num_dev > n_real["dev"] and config.prompt_share > 0
    dev_texts = _take_groups(rest, sizes, max(n_real["dev"], int(need_dev_prompt)), exact=False)
    texts = {"test_real": test_texts, "dev": dev_texts,
             "train": [t for t in rest if t not in set(dev_texts)]}
    real: dict[str, list[Prompt]] = {}
    for split in TRAINING_SPLITS:
        recordings = sorted((p for t in texts[split] for p in groups[t]), key=lambda p: p.key)
        real[split] = rng.sample(recordings, min(n_real[split], len(recordings)))
        if len(real[split]) < n_real[split]:
            log(f"{split}: {len(real[split])} real recordings available, not "
                f"{n_real[split]}; the rest is synthesized")
    return texts, real


def _pieces(prompts: list[Prompt]) -> list[str]:
    """The sentences of identically transcribed prompts, and their whole transcript."""
    return sorted({x for p in prompts for x in p.pieces} | {prompts[0].text})


def plan_corpus(config: CorpusConfig, data_dir: str | os.PathLike,
                log: Callable[[str], None] = print) -> CorpusPlan:
    """Every utterance of every split (no audio yet), and the held-out phrases.

    The held-out material is drawn first, from random streams of its own, so the test
    sets stay the same when only the training sizes change.
    """
    held_out = set(config.held_out_speakers)
    for spk in held_out:
        voice_for_speaker(spk)  # an unknown id is a mistake, not an empty test set
    voices = all_voices()
    pools = {"test_synth": [v for v in voices if v.speaker in held_out]}
    pools["train"] = pools["dev"] = [v for v in voices if v.speaker not in held_out]
    if not pools["test_synth"] or not pools["train"]:
        raise UserError("--held-out-speakers must name some voices, but not all of them")

    prompts, excluded = load_prompts(config.sound_dir, config.transcripts,
                                     config.max_prompt_seconds)
    log(f"asterisk: {len(prompts)} usable prompts, {len(excluded)} left out "
        f"({', '.join(f'{n} {why}' for why, n in _count(excluded.values()).items())})")
    groups: dict[str, list[Prompt]] = {}
    for p in prompts:
        groups.setdefault(p.text, []).append(p)
    generator = SentenceGenerator(config.text_dir)
    texts, real = _split_prompts(groups, generator, config,
                                 random.Random(f"{config.seed}/asterisk"), log)

    # Sentences: a test_synth sentence is no part of any prompt's transcript; a train or
    # dev sentence contains no test sentence (nor a sentence of a test_real prompt) and
    # repeats no sentence of the splits drawn before it.
    taken = set(groups)
    prompt_blob = "\n".join(f" {t} " for t in groups)
    sentences: dict[str, list[Sentence]] = {}
    sentences["test_synth"] = generator.unique_sentences(
        config.num_test_synth, random.Random(f"{config.seed}/test_synth"), taken,
        reject=lambda text: f" {text} " in prompt_blob)
    taken.update(s.text for s in sentences["test_synth"])
    held_out_phrases = sorted({x for t in texts["test_real"] for x in _pieces(groups[t])}
                              | {s.text for s in sentences["test_synth"]})
    for split in ("dev", "train"):
        n_synth = getattr(config, f"num_{split}") - len(real[split])
        n_prompt = round(config.prompt_share * n_synth) if texts[split] else 0
        split_rng = random.Random(f"{config.seed}/{split}")
        template = generator.unique_sentences(
            n_synth - n_prompt, split_rng, taken,
            reject=lambda text: any(contains_phrase(text, x) for x in held_out_phrases))
        taken.update(s.text for s in template)
        prompt_sentences = [groups[t][0].sentence for t in texts[split]]
        sentences[split] = template + _cycle(prompt_sentences, n_prompt, split_rng)

    wav_dir = Path(os.path.abspath(data_dir)) / "wav"
    plan = {"test_real": [_real_utterance(p, wav_dir) for t in texts["test_real"]
                          for p in groups[t]]}
    for split in ("train", "dev", "test_synth"):
        split_rng = random.Random(f"{config.seed}/{split}/voices")
        pairs = _assign_voices(sentences[split], pools[split], config.flite_share, split_rng)
        plan[split] = _synth_utterances(split, pairs, config, wav_dir)
        plan[split] += [_real_utterance(p, wav_dir) for p in real.get(split, [])]
    splits = {split: sorted(plan[split], key=lambda u: u.utt.encode()) for split in SPLITS}
    return CorpusPlan(splits, held_out_phrases, excluded)


def _count(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


# --- hygiene -------------------------------------------------------------------------------


def _as_datadir(d: DataDir | str | os.PathLike) -> DataDir:
    return d if isinstance(d, DataDir) else DataDir.load(d)


def check_hygiene(splits: Mapping[str, DataDir | str | os.PathLike],
                  held_out_speakers: Iterable[str] = HELD_OUT_SPEAKERS,
                  held_out_phrases: Iterable[str] = ()) -> dict[str, int]:
    """Assert that no test material is in train or dev; counts of what was checked.

    Raises :class:`HygieneError` (an AssertionError) listing examples when: a transcript
    of ``test_real`` or ``test_synth``, or one of ``held_out_phrases``, occurs in a
    ``train`` or ``dev`` transcript (as the whole transcript or a run of its words); a
    speaker of ``test_synth`` or of ``held_out_speakers`` speaks in ``train`` or
    ``dev``; a dev transcript is a train transcript; an utterance id is in two splits.
    Splits that are absent from ``splits`` are skipped.

    Example:
        >>> check_hygiene({"train": "data/train", "dev": "data/dev",
        ...                "test_real": "data/test_real", "test_synth": "data/test_synth"})
        ...                                                            # doctest: +SKIP
        {'train_texts': 2391, 'dev_texts': 193, ...}
    """
    dirs = {name: _as_datadir(d) for name, d in splits.items()}
    texts = {name: set(d.values("text").values()) for name, d in dirs.items()}
    speakers = {name: set(d.values("utt2spk").values()) for name, d in dirs.items()}
    training = [n for n in TRAINING_SPLITS if n in dirs]
    train_texts = set().union(*(texts[n] for n in training))
    train_speakers = set().union(*(speakers[n] for n in training))
    problems = []

    def report(what: str, found: set[str]) -> None:
        if found:
            examples = ", ".join(repr(x) for x in sorted(found)[:5])
            problems.append(f"{what} ({len(found)}): {examples}")

    # One string of all training transcripts, each between spaces: a phrase occurs in
    # some transcript iff " phrase " is in it (transcripts hold no newlines).
    blob = "\n".join(f" {t} " for t in sorted(train_texts))
    for test in (n for n in TEST_SPLITS if n in dirs):
        report(f"{test} sentences also in {'/'.join(training)} transcripts",
               {t for t in texts[test] if f" {t} " in blob})
    report(f"held-out phrases in {'/'.join(training)} transcripts",
           {x for x in held_out_phrases if f" {x} " in blob})
    if "test_synth" in dirs:
        report(f"test_synth speakers also in {'/'.join(training)}",
               speakers["test_synth"] & train_speakers)
    report(f"held-out voices in {'/'.join(training)}", set(held_out_speakers) & train_speakers)
    if "train" in dirs and "dev" in dirs:
        report("dev sentences also in train", texts["dev"] & texts["train"])
    seen: dict[str, str] = {}
    for name, d in dirs.items():
        for utt in d.utterances():
            if utt in seen:
                report(f"utterance ids in both {seen[utt]} and {name}", {utt})
            seen[utt] = name
    if problems:
        raise HygieneError("split hygiene violated: " + "; ".join(problems))
    counts = {f"{n}_texts": len(texts[n]) for n in dirs}
    counts.update({f"{n}_speakers": len(speakers[n]) for n in dirs})
    return counts


# --- building ------------------------------------------------------------------------------


def _run_jobs(jobs: list[SynthJob], nj: int, progress: bool) -> None:
    if not jobs:
        return
    with tqdm(total=len(jobs), desc="synthesizing", unit="utt", disable=not progress,
              dynamic_ncols=True) as bar:
        if nj <= 1:
            for job in jobs:
                run_job(job)
                bar.update()
            return
        # forkserver: workers must not inherit a parent's torch threads (fork can hang).
        context = multiprocessing.get_context("forkserver")
        executor = ProcessPoolExecutor(nj, mp_context=context)
        try:
            for _ in executor.map(run_job, jobs, chunksize=4):
                bar.update()
        except BaseException:
            executor.shutdown(wait=True, cancel_futures=True)
            raise
        executor.shutdown()


def _copy(source: str, dest: str) -> None:
    if os.path.exists(dest) and os.path.getsize(dest) == os.path.getsize(source):
        return
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with atomic_write(dest, "wb") as out, open(source, "rb") as f:
        shutil.copyfileobj(f, out)


def _split_datadir(utts: list[Utterance], durations: Mapping[str, float], path: Path) -> DataDir:
    d = DataDir(path=str(path))
    d.set_table("wav.scp", [(u.utt, u.wav) for u in utts])
    d.set_table("text", [(u.utt, u.text) for u in utts])
    d.set_table("utt2spk", [(u.utt, u.speaker) for u in utts])
    d.set_table("utt2dur", [(u.utt, format_seconds(durations[u.wav])) for u in utts])
    d.set_table("spk2gender", sorted({(u.speaker, u.gender) for u in utts}))
    return d


def _unchanged(d: DataDir, path: Path) -> bool:
    """Does ``path`` hold the same tables (features added later by other stages are fine)?"""
    if not (path / "spk2utt").is_file():
        return False
    try:
        old = DataDir.load(path)
    except Exception:  # noqa: BLE001 - anything unreadable is rewritten
        return False
    for name in _TABLES:
        if name == "utt2dur":  # feature extraction rewrites it with other rounding
            if not _same_durations(old.values(name), d.values(name)):
                return False
        elif old.values(name) != d.values(name):
            return False
    return old.values("spk2utt") == {s: " ".join(u) for s, u in d.spk2utt().items()}


def _same_durations(before: Mapping[str, str], after: Mapping[str, str]) -> bool:
    try:
        return before.keys() == after.keys() and all(
            abs(float(before[u]) - float(after[u])) <= 1e-3 for u in after)
    except ValueError:
        return False


def _prune(wav_dir: Path, keep: set[str], log: Callable[[str], None]) -> None:
    """Remove wav and temp files under ``wav_dir`` that this build does not use."""
    removed = 0
    for sub in ("train", "dev", "test_synth", "asterisk"):
        root = wav_dir / sub
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file() and (path.suffix in (".wav", ".tmp")) and str(path) not in keep:
                path.unlink()
                removed += 1
        for path in sorted(root.rglob("*"), reverse=True):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    if removed:
        log(f"removed {removed} files of an earlier build from {wav_dir}")


def corpus_stats(plan: Mapping[str, list[Utterance]], durations: Mapping[str, float],
                 config: CorpusConfig) -> dict:
    """Utterances, speakers, hours and words per split, and the settings (JSON-ready).

    ``oov_rate`` is the share of a split's words that never occur in train transcripts.
    """
    train_vocab = {w for u in plan.get("train", []) for w in u.text.split()}
    splits = {}
    for split, utts in plan.items():
        seconds = sum(durations[u.wav] for u in utts)
        words = [w for u in utts for w in u.text.split()]
        engines = _count("asterisk" if u.job is None else u.job.voice.engine for u in utts)
        splits[split] = {
            "utterances": len(utts), "speakers": len({u.speaker for u in utts}),
            "hours": round(seconds / 3600, 3), "seconds": round(seconds, 1),
            "mean_seconds": round(seconds / len(utts), 2) if utts else 0.0,
            "real_utterances": sum(u.job is None for u in utts),
            "engines": dict(sorted(engines.items())), "words": len(words),
            "vocabulary": len(set(words)),
            "oov_rate": round(sum(w not in train_vocab for w in words) / max(1, len(words)), 4),
        }
    settings = asdict(config)
    settings["held_out_speakers"] = list(config.held_out_speakers)
    return {"sample_rate": config.channel.sample_rate, "splits": splits,
            "total_hours": round(sum(s["seconds"] for s in splits.values()) / 3600, 3),
            "held_out_speakers": list(config.held_out_speakers), "config": settings}


def build_corpus(data_dir: str | os.PathLike, config: CorpusConfig | None = None, *,
                 nj: int = 2, progress: bool = True,
                 log: Callable[[str], None] = print) -> dict:
    """Make (or finish, or confirm) the corpus in ``data_dir``; returns its statistics.

    Plans every split, checks hygiene on the plan, copies the real recordings,
    synthesizes the missing wav files with ``nj`` processes, then writes each split dir
    and ``corpus_stats.json`` when their content changed, and removes wav files of an
    earlier build with other settings.
    """
    config = config or CorpusConfig()
    data_dir = Path(os.path.abspath(data_dir))
    corpus = plan_corpus(config, data_dir, log)
    plan = corpus.splits
    dirs = {split: _split_datadir(utts, {u.wav: 1.0 for u in utts}, data_dir / split)
            for split, utts in plan.items()}
    # Before any work: a leak is a bug in the plan, and nothing should be written.
    check_hygiene(dirs, config.held_out_speakers, corpus.held_out_phrases)

    for u in (u for utts in plan.values() for u in utts if u.source):
        _copy(u.source, u.wav)
    jobs = [u.job for utts in plan.values() for u in utts
            if u.job is not None and not os.path.exists(u.wav)]
    total = sum(len(utts) for utts in plan.values())
    log(f"{total} utterances planned, {len(jobs)} to synthesize with {nj} jobs")
    _run_jobs(jobs, nj, progress)

    durations = {u.wav: sf.info(u.wav).duration for utts in plan.values() for u in utts}
    for split, utts in plan.items():
        d = _split_datadir(utts, durations, data_dir / split)
        if not _unchanged(d, data_dir / split):
            d.save(data_dir / split)
    _prune(data_dir / "wav", set(durations), log)
    stats = corpus_stats(plan, durations, config)
    stats["hygiene"] = check_hygiene({s: data_dir / s for s in plan}, config.held_out_speakers,
                                     corpus.held_out_phrases)
    stats["asterisk_prompts_left_out"] = _count(corpus.excluded_prompts.values())
    _write_if_changed(data_dir / "held_out_phrases.txt",
                      "".join(f"{x}\n" for x in corpus.held_out_phrases))
    _write_if_changed(data_dir / "corpus_stats.json",
                      json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return stats


def _write_if_changed(path: Path, content: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != content:
        with atomic_write(path) as f:
            f.write(content)


def format_stats(stats: Mapping) -> str:
    """A small table of the statistics: one line per split."""
    lines = [f"{'split':<11} {'utts':>6} {'spk':>4} {'hours':>6} {'real':>5} {'espeak':>7} "
             f"{'flite':>6} {'vocab':>6} {'oov%':>5}"]
    for split, s in stats["splits"].items():
        e = s["engines"]
        lines.append(f"{split:<11} {s['utterances']:>6} {s['speakers']:>4} {s['hours']:>6.2f} "
                     f"{s['real_utterances']:>5} {e.get('espeak', 0):>7} {e.get('flite', 0):>6} "
                     f"{s['vocabulary']:>6} {100 * s['oov_rate']:>5.1f}")
    return "\n".join(lines)
