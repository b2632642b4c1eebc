"""Which part of a data set a data reference names: subset, split, revision.

A hub dataset or a local `datasets` folder is more than one table: it may
have subsets (the hub's configs, or the data_dir folders of a repo such as
Anthropic/hh-rlhf), splits (`train_prefs`, `test_sft`) and, on the hub,
revisions. A data reference names them after the data set, in the one
string every reference field already takes:

    HuggingFaceH4/ultrafeedback_binarized?split=train_prefs
    Anthropic/hh-rlhf?subset=harmless-base&split=test
    HuggingFaceH4/ultrachat_200k@main?split=train_sft       # @REVISION: a branch, tag or commit
    ./my_dataset?split=validation                            # a folder written by save_to_disk

`@REVISION` is the hub's own way of pinning a repo (`?revision=` is read too).
The canonical form the engine stores is `hub:ORG/NAME@REV?subset=S&split=T`
or `path:/abs/folder?subset=S&split=T`; `parse_data_value` splits what a
stage receives back into the location and its `DataOptions`.

Compressed files: `NAME.EXT.gz` is read as `NAME.EXT` (`train.jsonl.gz`, as
HH ships); `data_suffix` says which reader a file wants.

Torch-free and free of `datasets`: the spec loader uses it on every start.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath

OPTION_NAMES = ("subset", "split", "revision")
#: words people bring from elsewhere, and the option they mean
_OPTION_HINTS = {"name": "subset", "config": "subset", "config_name": "subset", "data_dir": "subset",
                 "configuration": "subset", "rev": "revision", "branch": "revision", "commit": "revision",
                 "tag": "revision"}
_NAME_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_VALUES = {
    # a config name, or a data_dir folder such as harmless-base or data/en
    "subset": re.compile(rf"{_NAME_PART}(?:/{_NAME_PART})*", re.ASCII),
    "split": re.compile(_NAME_PART, re.ASCII),
    # a branch, a tag, a commit, or refs/pr/N
    "revision": re.compile(rf"{_NAME_PART}(?:/{_NAME_PART})*", re.ASCII),
}
_EXPECTED = {
    "subset": "a config name or a data folder such as harmless-base",
    "split": "a split name such as train_prefs",
    "revision": "a branch, tag or commit such as main",
}
COMPRESSED_SUFFIX = ".gz"


class DataOptionError(ValueError):
    """Options that cannot be read; the message says what was expected."""


@dataclass(frozen=True)
class DataOptions:
    """The part of a data set a reference names; None = the default."""

    subset: str | None = None
    split: str | None = None
    revision: str | None = None

    def __bool__(self) -> bool:
        return any(getattr(self, name) is not None for name in OPTION_NAMES)

    def named(self) -> list[str]:
        return [name for name in OPTION_NAMES if getattr(self, name) is not None]

    def render(self, scheme: str, location: str) -> str:
        """What follows the location in the canonical reference."""
        text = f"@{self.revision}" if scheme == "hub" and self.revision else ""
        query = "&".join(f"{name}={getattr(self, name)}" for name in ("subset", "split")
                         if getattr(self, name) is not None)
        if scheme != "hub" and self.revision:  # never valid; kept visible rather than dropped
            query = "&".join(filter(None, [query, f"revision={self.revision}"]))
        if query:
            return f"{text}?{query}"
        # A path with a `?` of its own ends in an empty query, so it reads back unchanged.
        return f"{text}?" if "?" in location else text


#: a reference that names a whole data set (or is no data reference)
NO_OPTIONS = DataOptions()


def split_query(text: str) -> tuple[str, DataOptions]:
    """`LOCATION?key=value&...` -> (LOCATION, options); text without `?` has none.
    The last `?` starts the options, so a path may hold one if it ends in `?`."""
    location, sep, query = text.rpartition("?")
    if not sep:
        return text, NO_OPTIONS
    values: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, has_value, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key not in OPTION_NAMES:
            hint = _OPTION_HINTS.get(key.lower()) or next(iter(difflib.get_close_matches(key, OPTION_NAMES, 1)), None)
            raise DataOptionError(
                f"unknown option {key!r} after '?' (options: subset, split, revision)"
                + (f"; did you mean {hint!r}?" if hint else "")
            )
        if key in values:
            raise DataOptionError(f"option {key!r} given twice")
        if not has_value or not _VALUES[key].fullmatch(value) or ".." in value.split("/"):
            raise DataOptionError(f"{key}={value!r}: expected {_EXPECTED[key]}")
        values[key] = value
    return location, DataOptions(**values)


def split_revision(location: str) -> tuple[str, str | None]:
    """`org/name@REV` -> (`org/name`, REV); no `@`: (location, None)."""
    name, sep, revision = location.partition("@")
    if not sep:
        return location, None
    if not _VALUES["revision"].fullmatch(revision) or ".." in revision.split("/"):
        raise DataOptionError(f"@{revision!r}: expected {_EXPECTED['revision']} after '@'")
    return name, revision


def with_revision(options: DataOptions, revision: str | None) -> DataOptions:
    """`options` with the `@REV` of the location; both ways at once is one too many."""
    if revision is None:
        return options
    if options.revision is not None and options.revision != revision:
        raise DataOptionError(f"two revisions: @{revision} and revision={options.revision}; give one")
    return DataOptions(options.subset, options.split, revision)


def parse_data_value(scheme: str, value: str) -> tuple[str, DataOptions]:
    """The value of a canonical `hub:` or `path:` reference (a stage's
    Source.value) -> (hub id or absolute path, options). Other schemes have
    none. Raises DataOptionError."""
    if scheme not in ("hub", "path"):
        return value, NO_OPTIONS
    location, options = split_query(value)
    if scheme == "hub":
        location, revision = split_revision(location)
        options = with_revision(options, revision)
    return location, options


def reference_from_table(table: Mapping[str, object]) -> str:
    """The reference string of a data table, `{ hub = "org/name", split = "test" }`
    or `{ path = "./folder", subset = "en" }`: for a front end that offers
    the table form; the string is then resolved (and stored) like any other.
    Raises DataOptionError."""
    keys = ("hub", "path", *OPTION_NAMES)
    unknown = [key for key in table if key not in keys]
    if unknown:
        hint = _OPTION_HINTS.get(unknown[0].lower()) or next(iter(difflib.get_close_matches(unknown[0], keys, 1)), None)
        raise DataOptionError(f"unknown key {unknown[0]!r} in a data table (keys: hub or path, subset, split, "
                              "revision)" + (f"; did you mean {hint!r}?" if hint else ""))
    sources = [key for key in ("hub", "path") if key in table]
    if len(sources) != 1:
        raise DataOptionError("a data table names its data set with one of hub = \"ORG/NAME\" or path = \"./folder\"")
    values = {key: table[key] for key in keys if key in table}
    for key, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise DataOptionError(f"{key} in a data table: expected a non-empty string")
    options = DataOptions(*(str(values[name]).strip() if name in values else None for name in OPTION_NAMES))
    for name in options.named():
        value = getattr(options, name)
        if not _VALUES[name].fullmatch(value) or ".." in value.split("/"):
            raise DataOptionError(f"{name}={value!r}: expected {_EXPECTED[name]}")
    scheme = sources[0]
    location = str(values[scheme]).strip()
    if scheme == "path" and options.revision is not None:
        raise DataOptionError("revision is for hub datasets; a local file or folder is read as it is")
    return f"{scheme}:{location}{options.render(scheme, location)}"


def data_suffix(path: PurePath | str) -> str:
    """The suffix that says how a file is read, lower case: `.jsonl` for
    `train.jsonl` and for `train.jsonl.gz`."""
    path = PurePath(path)
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] == COMPRESSED_SUFFIX:
        return suffixes[-2]
    return path.suffix.lower()


def is_compressed(path: PurePath | str) -> bool:
    return PurePath(path).suffix.lower() == COMPRESSED_SUFFIX
