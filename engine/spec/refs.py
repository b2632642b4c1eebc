"""Reference fields: how one stage names a model, a tokenizer or a data set.

People write a reference as

- another stage's name (`"pretrain"`): that stage's output;
- `builtin:NAME`: an entry of the offline catalogue in engine/spec/catalog.py
  (a bare built-in name such as `"llama-4m"` is accepted too);
- a local file or folder: anything starting with `./`, `../`, `/` or `~`,
  anything ending in a data-file extension, or a relative path that exists;
  relative paths are read from the spec file's folder;
- a Hugging Face hub id `org/name` (optionally written `hf:org/name`).

A data reference may name part of a data set after it: its subset, split
and, on the hub, revision (`org/name@REV?subset=S&split=T`, see data_refs.py);
they are checked against what a local folder holds.

`resolve_ref` turns that into one canonical form the engine stores and the
stage context resolves: `stage:NAME`, `builtin:NAME`, `path:/absolute/path`
or `hub:org/name` (a data reference's options after it). The canonical forms
are accepted as input too, so a stored spec validates again unchanged.

Checked in this order, so the answer never depends on what happens to lie
around on disk when a name is unambiguous: explicit scheme, stage name,
path syntax, bare built-in name, existing relative path, hub id.
"""

from __future__ import annotations

import codecs
import difflib
import gzip
import json
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from io import BufferedIOBase
from pathlib import Path

from engine.spec.catalog import BUILTINS
from engine.spec.data_refs import (
    NO_OPTIONS,
    DataOptionError,
    DataOptions,
    data_suffix,
    is_compressed,
    parse_data_value,
    split_query,
    split_revision,
    with_revision,
)

SCHEMES = ("stage", "builtin", "path", "hub")
#: a reference ending in one of these is a local file, never a hub id or a stage (`.gz`: a compressed one)
DATA_EXTENSIONS = (".txt", ".jsonl", ".json", ".parquet", ".csv", ".arrow", ".gz")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+", re.ASCII)
STAGE_NAME = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)

# section of engine.spec.catalog -> (one of them, several of them)
_SECTION_WORDS = {
    "model": ("a model", "models"),
    "tokenizer": ("a tokenizer", "tokenizers"),
    "data": ("a data set", "data sets"),
}
_PATH_PREFIXES = ("./", "../", "/", "~")


class RefError(ValueError):
    """A reference that cannot be resolved; the message is one line saying
    what was expected (the caller adds the file, stage and field)."""


@dataclass(frozen=True)
class Ref:
    scheme: str  # stage, builtin, path or hub
    value: str  # stage name, built-in name, absolute path or hub id
    #: the subset, split and revision a data reference names (hub ids and local folders only)
    options: DataOptions = NO_OPTIONS

    def __str__(self) -> str:
        return f"{self.scheme}:{self.value}{self.options.render(self.scheme, self.value)}"

    @classmethod
    def parse(cls, canonical: str) -> Ref:
        """Split an already canonical reference (`stage:pretrain`, `hub:org/name@main?split=test`)."""
        scheme, sep, value = canonical.partition(":")
        if not sep or scheme not in SCHEMES or not value:
            raise ValueError(f"not a canonical reference: {canonical!r}")
        location, options = parse_data_value(scheme, value)
        return cls(scheme, location, options)


def section_words(section: str) -> tuple[str, str]:
    return _SECTION_WORDS.get(section, (f"a {section}", f"{section}s"))


def resolve_ref(
    raw: str,
    *,
    section: str,
    stages: Sequence[str],
    base_dir: Path,
    current_stage: str | None = None,
) -> Ref:
    """Resolve what a person wrote in a reference field to its canonical Ref.

    `section` is the built-in catalogue section the field may name (model,
    tokenizer or data), `stages` the stage names of the file in file order,
    `base_dir` the folder relative paths start from. Raises RefError."""
    if section != "data":
        return _resolve(raw, section=section, stages=stages, base_dir=base_dir, current_stage=current_stage)
    text, options = _data_options(raw.strip(), base_dir)
    ref = _resolve(text, section=section, stages=stages, base_dir=base_dir, current_stage=current_stage)
    if options:
        _check_options(ref, options)
        ref = Ref(ref.scheme, ref.value, options)
    if ref.scheme == "path":
        _check_text_file(Path(ref.value))
    return ref


def _data_options(text: str, base_dir: Path) -> tuple[str, DataOptions]:
    """A data reference without its options (`?split=...`, a hub id's `@REV`),
    and the options. A path that exists as written is taken whole."""
    if ("?" not in text and "@" not in text) or _existing_path(text, base_dir):
        return text, NO_OPTIONS
    try:
        location, options = split_query(text)
        scheme, sep, rest = location.partition(":")
        prefix, bare = (f"{scheme}:", rest) if sep and scheme in ("hub", "hf") else ("", location)
        # Only a hub id takes `@REV`; an `@` anywhere else stays part of a path.
        if HUB_ID.fullmatch(bare.partition("@")[0]) and "@" in bare and not _existing_path(location, base_dir):
            name, revision = split_revision(bare)
            location, options = prefix + name, with_revision(options, revision)
    except DataOptionError as exc:
        raise RefError(f"{text!r}: {exc}") from None
    return location, options


def _existing_path(text: str, base_dir: Path) -> bool:
    try:
        path = Path(text.removeprefix("path:")).expanduser()
        return (path if path.is_absolute() else base_dir / path).exists()
    except (OSError, ValueError):
        return False


def _check_options(ref: Ref, options: DataOptions) -> None:
    """RefError when `options` do not fit what `ref` names: only hub ids and
    local datasets folders have subsets and splits, only the hub revisions.
    A folder written by save_to_disk is checked here; other folders and hub
    datasets when the stage loads them."""
    if ref.scheme in ("stage", "builtin"):
        raise RefError(f"{ref}: a subset, split or revision names part of a hub dataset or a datasets folder; "
                       f"{'a stage output' if ref.scheme == 'stage' else 'a built-in data set'} has none")
    if ref.scheme == "hub":
        return
    path = Path(ref.value)
    if options.revision is not None:
        raise RefError(f"{path}: revision is for hub datasets; a local file or folder is read as it is")
    if path.is_file():
        raise RefError(f"{path} is a file, read whole; a subset or split names part of a datasets folder "
                       "or a hub dataset")
    folder = path
    if options.subset is not None and _saved_dataset(path / options.subset) is not None:
        folder = path / options.subset
    elif options.subset is not None and _saved_dataset(path) is not None:
        raise RefError(f"{path}: a folder written by save_to_disk has splits, not subsets; no subfolder "
                       f"{options.subset!r} holds a saved dataset either")
    splits = _saved_dataset(folder)
    if splits is None or options.split is None:
        return
    if not splits:
        raise RefError(f"{folder}: holds one dataset (save_to_disk of a Dataset), not splits; leave split out")
    if options.split not in splits:
        raise RefError(f"{folder}: no split {options.split!r} (splits: {', '.join(splits)})")


def _saved_dataset(folder: Path) -> list[str] | None:
    """The splits of a folder written by save_to_disk ([] for a single
    Dataset), or None when it is not one."""
    if (folder / "state.json").is_file():
        return []
    try:
        splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(s) for s in splits] if isinstance(splits, list) else None


def _resolve(raw: str, *, section: str, stages: Sequence[str], base_dir: Path, current_stage: str | None) -> Ref:
    text = raw.strip()
    if not text:
        raise RefError(_expected("got an empty string", section))
    if "\0" in text:
        raise RefError(_expected(f"got {text!r}", section))

    scheme, sep, rest = text.partition(":")
    if sep and scheme in ("builtin", "stage", "path", "hub", "hf"):
        if scheme == "builtin":
            return _builtin(rest, section)
        if scheme == "stage":
            return _stage(rest, stages, current_stage, section)
        if scheme == "path":
            return _path(rest, base_dir)
        return _hub(rest)  # hub: or hf:
    if sep and len(scheme) > 1 and "/" not in scheme:
        # `s3://...`, `gs:...`: a scheme we do not read (one letter would be a drive)
        raise RefError(
            f"unknown reference scheme '{scheme}:' in {text!r}; "
            + _expected_kinds(section)
        )

    if text in stages:
        return _stage(text, stages, current_stage, section)
    if text.startswith(_PATH_PREFIXES) or text in (".", "..") or text.lower().endswith(DATA_EXTENSIONS):
        return _path(text, base_dir)
    if text in BUILTINS:
        return _builtin(text, section)
    if (base_dir / text).exists():
        return _path(text, base_dir)
    if HUB_ID.fullmatch(text):
        return Ref("hub", text)
    if "/" in text or "\\" in text:
        return _path(text, base_dir)  # reports the missing file
    if STAGE_NAME.fullmatch(text):
        listed = ", ".join(stages) if stages else "none"
        message = f"unknown stage {text!r} (stages in this file: {listed})"
        guess = _suggest(text, [*stages, *_in_section(section)])
        if guess in BUILTINS:
            guess = f"builtin:{guess}"
        if guess:
            message += f"; did you mean {guess!r}?"
        raise RefError(message)
    raise RefError(_expected(f"got {text!r}", section))


def _builtin(name: str, section: str) -> Ref:
    _, several = section_words(section)
    allowed = _in_section(section)
    entry = BUILTINS.get(name)
    if entry is None:
        message = f"unknown built-in {name!r} (built-in {several}: {', '.join(allowed) or 'none'})"
        guess = _suggest(name, allowed)
        if guess:
            message += f"; did you mean 'builtin:{guess}'?"
        raise RefError(message)
    if entry.section != section:
        raise RefError(
            f"builtin:{name} is {section_words(entry.section)[0]}, "
            f"expected one of the built-in {several}: {', '.join(allowed) or 'none'}"
        )
    return Ref("builtin", name)


def _stage(name: str, stages: Sequence[str], current: str | None, section: str) -> Ref:
    if name == current:
        raise RefError(
            f"stage {name!r} cannot use its own output; "
            "name another stage, builtin:NAME, a path or a hub id"
        )
    if name not in stages:
        listed = ", ".join(stages) if stages else "none"
        raise RefError(f"unknown stage {name!r} (stages in this file: {listed})")
    return Ref("stage", name)


def _path(text: str, base_dir: Path) -> Ref:
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    path = path.resolve()
    if not path.exists():
        where = "" if Path(text).expanduser().is_absolute() else f" (relative paths start at {base_dir})"
        raise RefError(f"no such file or folder: {path}{where}")
    return Ref("path", str(path))


#: data files read as text: decoded while the spec is checked, so a bad byte is named before anything runs
TEXT_SUFFIXES = (".txt", ".md", ".jsonl", ".json", ".ndjson", ".csv", ".tsv")
_CHUNK = 1 << 20


def _check_text_file(path: Path) -> None:
    """RefError naming the line of the first byte of `path` that is not
    UTF-8, for the data files read as text (about a second per GB), also
    inside a `.gz` file, whose corruption is named too."""
    if not path.is_file() or data_suffix(path) not in TEXT_SUFFIXES:
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    try:
        with _open_bytes(path) as file:
            for chunk in _chunks(file, path):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    # The decoder's position counts from the bytes it held back plus this chunk.
                    held = len(exc.object) - len(chunk)
                    bad_at = max(0, exc.start - held)
                    line += chunk.count(b"\n", 0, bad_at)
                    raise RefError(f"{path}: line {line} is not UTF-8 text (byte {exc.object[exc.start]:#04x}); "
                                   "save the file as UTF-8") from None
                line += chunk.count(b"\n")
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise RefError(f"{path}: ends in the middle of a UTF-8 character (line {line}); "
                       "save the file as UTF-8") from None
    except OSError as exc:
        raise RefError(f"{path}: cannot be read ({exc.strerror})") from None


def _open_bytes(path: Path) -> BufferedIOBase:
    return gzip.open(path, "rb") if is_compressed(path) else path.open("rb")


def _chunks(file: BufferedIOBase, path: Path) -> Iterator[bytes]:
    """The file's (decompressed) bytes; a damaged gzip stream is a RefError."""
    try:
        while chunk := file.read(_CHUNK):
            yield chunk
    except EOFError:
        raise RefError(f"{path}: the gzip file is cut short (it ends before its end marker); "
                       "expected a whole .gz file") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise RefError(f"{path}: not a readable gzip file ({exc}); expected gzip-compressed text") from None


def _hub(hub_id: str) -> Ref:
    if not HUB_ID.fullmatch(hub_id):
        raise RefError(f"{hub_id!r} is not a hub id; expected org/name")
    return Ref("hub", hub_id)


def _expected_kinds(section: str) -> str:
    several = section_words(section)[1]
    allowed = ", ".join(f"builtin:{n}" for n in _in_section(section)) or "none"
    return (
        f"expected a stage name, one of the built-in {several} ({allowed}), "
        "a path such as ./data.txt or a hub id org/name"
    )


def _expected(got: str, section: str) -> str:
    return f"{_expected_kinds(section)}, {got}"


def _in_section(section: str) -> list[str]:
    """Built-in names of a section, in catalogue order (smallest model first)."""
    return [name for name, b in BUILTINS.items() if b.section == section]


def _suggest(word: str, choices: Sequence[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None
