"""Shared helpers for the corpus preparation modules in ``local/``.

Every ``local/<corpus>.py`` turns a corpus on disk into Kaldi-style data dirs
(``data/<set>/{wav.scp,text,utt2spk,spk2utt}`` and, for talk-level audio,
``segments``; see ``docs/DESIGN.md``). This module holds what they share:

- :class:`CorpusError`: the one error raised for a corpus that is missing or
  not laid out as expected (a ``ValueError``, so callers may catch either).
- :class:`Utterance` and :func:`write_kaldi_dir`: write one data dir atomically
  (into ``<set>.tmp``, then renamed into place), sorted by utterance id in C
  locale order, validated, with a ``.done`` marker holding the options used.
- :func:`is_done`: the idempotency check behind ``--force``.
- :func:`validate_kaldi_dir`: checks an existing data dir against the contract.
- :class:`SkipCounter`: counts skipped items by kind, logs the first few.
- :func:`download_file` / :func:`safe_extract`: resumable downloads and tar
  extraction that refuses absolute paths, ``..`` and links leaving the target.
- :func:`new_parser`, :func:`run_cli`, :func:`setup_logging`: the shared command line.

The corpus itself is only ever read: nothing here writes inside a corpus dir.

Kaldi tables and atomic directories come from :mod:`espnet_early_exit.fileio`, the ``.done``
marker from :mod:`espnet_early_exit.stages.markers` (one format for every stage).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tarfile
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping, Sequence

from espnet_early_exit.fileio import atomic_directory, format_table, read_table, spk2utt
from espnet_early_exit.stages.markers import DONE_MARKER, read_done_marker
from espnet_early_exit.stages.markers import write_done_marker as write_marker

logger = logging.getLogger("local.common")

KALDI_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")


class CorpusError(ValueError):
    """A corpus (or a data dir made from one) is missing or not laid out as expected."""


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr as ``time (module:line) LEVEL: message``, like ESPnet's recipes."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s",
    )


# ---------------------------------------------------------------------------
# Skipped-item bookkeeping


class SkipCounter:
    """Counts skipped items by kind; logs the first ``max_logged`` of each kind.

    >>> skips = SkipCounter(logging.getLogger("x"), "dev_clean")
    >>> skips.skip("missing_audio", "no flac for 1-2-0003")
    >>> dict(skips.counts)
    {'missing_audio': 1}
    """

    def __init__(self, log: logging.Logger, set_name: str, max_logged: int = 10) -> None:
        self.log = log
        self.set_name = set_name
        self.max_logged = max_logged
        self.counts: Counter[str] = Counter()

    def skip(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] <= self.max_logged:
            self.log.warning("[%s] skipped (%s): %s", self.set_name, kind, message)
        elif self.counts[kind] == self.max_logged + 1:
            self.log.warning(
                "[%s] more items skipped for %s; only the total is reported", self.set_name, kind
            )

    def log_summary(self) -> None:
        if self.counts:
            summary = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            self.log.warning("[%s] skipped in total: %s", self.set_name, summary)

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


# ---------------------------------------------------------------------------
# Kaldi data dirs


@dataclass(frozen=True)
class Utterance:
    """One line of ``text``/``utt2spk`` plus where its audio lives.

    ``audio`` is the file holding the utterance (whole-file audio) or the
    recording it is cut from (talk-level audio: then ``recording_id``,
    ``start`` and ``end`` in seconds are set and a ``segments`` file is written).
    """

    utt_id: str
    speaker: str
    text: str
    audio: Path
    recording_id: str | None = None
    start: float | None = None
    end: float | None = None

    @property
    def is_segment(self) -> bool:
        return self.recording_id is not None


@dataclass(frozen=True)
class PreparedSet:
    """What a ``prepare_<corpus>`` function reports for one data dir."""

    path: Path
    num_utts: int
    skipped: dict[str, int]
    reused: bool  # True when a complete earlier run was found and kept


def check_id(value: str, what: str) -> None:
    """Kaldi ids: non-empty, no whitespace, and no ``/`` (ids become file names later)."""
    if not value or any(c.isspace() for c in value) or "/" in value:
        raise CorpusError(f"invalid {what} {value!r}: must be non-empty, without whitespace or '/'")


def format_time(seconds: float) -> str:
    """Segment times: seconds with 2 decimals."""
    return f"{seconds:.2f}"


def read_kaldi_table(path: Path) -> dict[str, str]:
    """Read a table of a data dir; an empty line or a repeated id is a :class:`CorpusError`."""
    return read_table(path, empty_lines="error", error=CorpusError)


def kaldi_dir_contents(utterances: Sequence[Utterance]) -> dict[str, str]:
    """Render the Kaldi files for ``utterances``; raises :class:`CorpusError` on inconsistencies."""
    if not utterances:
        raise CorpusError("no utterances to write")
    seen: set[str] = set()
    segment_mode = utterances[0].is_segment
    recordings: dict[str, str] = {}
    for utt in utterances:
        check_id(utt.utt_id, "utterance id")
        check_id(utt.speaker, "speaker id")
        if utt.utt_id in seen:
            raise CorpusError(f"duplicate utterance id {utt.utt_id!r}")
        seen.add(utt.utt_id)
        if not utt.utt_id.startswith(utt.speaker):
            # Kaldi sorts utt2spk and spk2utt consistently only if the speaker is a prefix.
            raise CorpusError(f"speaker {utt.speaker!r} is not a prefix of utterance {utt.utt_id!r}")
        if not utt.text.strip() or "\n" in utt.text:
            raise CorpusError(f"utterance {utt.utt_id!r} has an empty or multi-line transcript")
        if utt.is_segment != segment_mode:
            raise CorpusError("cannot mix whole-file utterances and segments in one data dir")
        if any(c.isspace() for c in str(utt.audio)):
            raise CorpusError(f"audio path with whitespace is not allowed in wav.scp: {utt.audio}")
        key = utt.recording_id if utt.is_segment else utt.utt_id
        assert key is not None
        if segment_mode:
            check_id(key, "recording id")
            if utt.start is None or utt.end is None or not 0 <= utt.start < utt.end:
                raise CorpusError(f"segment {utt.utt_id!r} has bad times {utt.start}..{utt.end}")
        previous = recordings.setdefault(key, str(utt.audio))
        if previous != str(utt.audio):
            raise CorpusError(f"recording {key!r} maps to two files: {previous} and {utt.audio}")

    utt2spk = {u.utt_id: u.speaker for u in utterances}
    files = {
        "wav.scp": format_table(recordings.items()),
        "text": format_table((u.utt_id, " ".join(u.text.split())) for u in utterances),
        "utt2spk": format_table(utt2spk.items()),
        "spk2utt": format_table(
            (spk, " ".join(utts)) for spk, utts in spk2utt(utt2spk).items()
        ),
    }
    if segment_mode:
        files["segments"] = format_table(
            (u.utt_id, f"{u.recording_id} {format_time(u.start)} {format_time(u.end)}")  # type: ignore[arg-type]
            for u in utterances
        )
    return files


def is_done(set_dir: Path, params: Mapping[str, Any], force: bool = False) -> bool:
    """True when ``set_dir`` holds a complete earlier run made with the same ``params``.

    A complete run made with *different* options is an error (rerun with ``--force``):
    silently keeping it would hide the change of options.
    """
    if force:
        return False
    done = read_done_marker(set_dir)
    if done is None:
        return False
    previous = done.get("params")
    wanted = json.loads(json.dumps(dict(params)))  # normalise tuples/paths like the marker
    if previous != wanted:
        raise CorpusError(
            f"{set_dir} was prepared with other options ({previous}); now asked for {wanted}. "
            "Rerun with --force to overwrite it."
        )
    return True


def reused_set(set_dir: Path) -> PreparedSet:
    """The :class:`PreparedSet` of a complete earlier run (read back from its marker)."""
    done = read_done_marker(set_dir) or {}
    logger.info("%s is complete (%s exists); skipping (use --force to redo)", set_dir, DONE_MARKER)
    return PreparedSet(set_dir, int(done.get("num_utts", 0)), dict(done.get("skipped", {})), True)


def write_done_marker(directory: Path, params: Mapping[str, Any], **info: Any) -> None:
    """``directory/.done``: ``{"params": params, **info}`` (see :func:`is_done`)."""
    write_marker(directory, {"params": dict(params), **info})


def write_kaldi_dir(
    set_dir: Path,
    utterances: Sequence[Utterance],
    params: Mapping[str, Any],
    skipped: Mapping[str, int] | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> PreparedSet:
    """Write one Kaldi data dir atomically, validated, with a ``.done`` marker.

    ``extra_files`` (name -> content) are written as given (e.g. ``stm``, ``glm``).
    """
    files = kaldi_dir_contents(utterances)
    files.update(extra_files or {})
    skipped = dict(sorted((skipped or {}).items()))
    with atomic_directory(set_dir) as tmp:
        for name, content in files.items():
            (tmp / name).write_text(content, encoding="utf-8")
        validate_kaldi_dir(tmp)
        write_done_marker(tmp, params, num_utts=len(utterances), skipped=skipped)
    logger.info("wrote %s (%d utterances)", set_dir, len(utterances))
    return PreparedSet(Path(set_dir), len(utterances), skipped, False)


def validate_kaldi_dir(set_dir: Path) -> None:
    """Check a data dir against the contract in ``docs/DESIGN.md``; raise :class:`CorpusError`."""
    set_dir = Path(set_dir)
    for name in KALDI_FILES:
        if not (set_dir / name).is_file():
            raise CorpusError(f"{set_dir}: missing {name}")
    tables: dict[str, dict[str, str]] = {}
    names = list(KALDI_FILES) + (["segments"] if (set_dir / "segments").is_file() else [])
    for name in names:
        table = read_kaldi_table(set_dir / name)
        keys = list(table)
        if keys != sorted(keys):
            raise CorpusError(f"{set_dir / name} is not sorted by id (C locale)")
        tables[name] = table
    utts = set(tables["text"])
    if set(tables["utt2spk"]) != utts:
        raise CorpusError(f"{set_dir}: text and utt2spk list different utterances")
    if {k: v.split() for k, v in tables["spk2utt"].items()} != spk2utt(tables["utt2spk"]):
        raise CorpusError(f"{set_dir}: spk2utt does not match utt2spk")
    for key, value in tables["wav.scp"].items():
        if not value or value.rstrip().endswith("|"):
            raise CorpusError(f"{set_dir / 'wav.scp'}: {key!r} is not a plain file path: {value!r}")
    if "segments" in tables:
        if set(tables["segments"]) != utts:
            raise CorpusError(f"{set_dir}: segments and text list different utterances")
        for utt, value in tables["segments"].items():
            fields = value.split()
            if len(fields) != 3 or fields[0] not in tables["wav.scp"]:
                raise CorpusError(f"{set_dir / 'segments'}: bad line for {utt!r}: {value!r}")
            start, end = float(fields[1]), float(fields[2])
            if not 0 <= start < end:
                raise CorpusError(f"{set_dir / 'segments'}: {utt!r} has start >= end")
    elif set(tables["wav.scp"]) != utts:
        raise CorpusError(f"{set_dir}: wav.scp and text list different utterances")


def new_parser(module_doc: str) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``module_doc``, with the shared options."""
    parser = argparse.ArgumentParser(description=module_doc.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_arguments(parser)
    return parser


def run_cli(parser: argparse.ArgumentParser, action: Callable[[argparse.Namespace], object],
            argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, set up logging, run ``action(args)``; a :class:`CorpusError` is logged, exit status 1."""
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        action(args)
    except CorpusError as e:
        logger.error("%s", e)
        return 1
    return 0


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every ``local/<corpus>.py`` shares."""
    parser.add_argument("--output_dir", type=Path, default=Path("data"),
                        help="where the Kaldi data dirs go (default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="redo sets that are already complete (marked by .done)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")


# ---------------------------------------------------------------------------
# Downloads


def download_file(url: str, target: Path, chunk_size: int = 1 << 20) -> Path:
    """Download ``url`` to ``target``, resuming a partial ``<target>.part`` with an HTTP Range.

    The final name appears only once the download is complete (atomic rename).
    """
    target = Path(target)
    if target.is_file():
        logger.info("%s already downloaded", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    offset = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    logger.info("downloading %s -> %s%s", url, target, f" (resuming at {offset} bytes)" if offset else "")
    try:
        response = urllib.request.urlopen(request, timeout=60)  # noqa: S310 (fixed https URLs)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not offset:  # 416: the partial file is not a prefix we can resume from
            raise
        partial.unlink()
        return download_file(url, target, chunk_size)
    with response:
        if offset and response.status != 206:  # server ignored the range: start again
            offset = 0
        expected = response.headers.get("Content-Length")
        expected_total = int(expected) + offset if expected is not None else None
        with partial.open("ab" if offset else "wb") as out:
            while chunk := response.read(chunk_size):
                out.write(chunk)
    size = partial.stat().st_size
    if expected_total is not None and size != expected_total:
        raise OSError(f"incomplete download of {url}: {size} of {expected_total} bytes; rerun to resume")
    os.replace(partial, target)
    return target


def _member_target(member: tarfile.TarInfo, strip_prefix: str | None) -> PurePosixPath | None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise CorpusError(f"refusing unsafe archive member {member.name!r}")
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        if link.is_absolute() or ".." in link.parts:
            raise CorpusError(f"refusing archive link {member.name!r} -> {member.linkname!r}")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise CorpusError(f"refusing special archive member {member.name!r}")
    if strip_prefix:
        parts = name.parts
        if not parts or parts[0] != strip_prefix:
            return None
        name = PurePosixPath(*parts[1:]) if len(parts) > 1 else PurePosixPath(".")
    return name


def safe_extract(archive: Path, target_dir: Path, strip_prefix: str | None = None) -> None:
    """Extract a tar archive into ``target_dir``, refusing members that would land outside.

    ``strip_prefix``: drop this leading folder from every member (members outside it are skipped).
    """
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    root = target_dir.resolve()
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            name = _member_target(member, strip_prefix)
            if name is None or name == PurePosixPath("."):
                continue
            destination = (root / name).resolve()
            if destination != root and root not in destination.parents:
                raise CorpusError(f"refusing archive member {member.name!r}: leaves {target_dir}")
            member.name = str(name)
            members.append(member)
        # filter="data" (Python >= 3.12) repeats these checks and drops unsafe modes.
        tar.extractall(target_dir, members=members, filter="data")
