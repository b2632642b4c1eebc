"""Rows of a data set that `datasets` opens: a hub dataset, a folder written
by `save_to_disk`, or a local folder laid out as a hub dataset repo.

    rows = dataset_rows("HuggingFaceH4/ultrafeedback_binarized", DataOptions(split="train_prefs"), hub=True)

What the options mean (engine/spec/data_refs.py reads them from the reference):

- `subset`: the dataset's config (`name=` of `datasets.load_dataset`); for a
  dataset that declares no configs (only `default`, as Anthropic/hh-rlhf) it
  is the folder of the repo to read (`data_dir=`, harmless-base). In a folder
  written by save_to_disk it is a subfolder holding another saved dataset.
- `split`: the split; unset = `train`, or the one split whose name starts with
  `train` (`train_sft` of ultrachat_200k); several such splits must be named.
- `revision`: the hub revision (branch, tag, commit), passed to the hub as is.

Local folders are streamed (`streaming=True`), so reading them writes no
Arrow cache outside the workspace; a hub dataset is streamed when only its
first rows are wanted. Torch-free; `datasets` is imported when first used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.errors import StageFailed
from engine.spec.data_refs import DataOptions


def is_saved_dataset(path: Path) -> bool:
    # save_to_disk writes state.json (a Dataset) or dataset_dict.json (a DatasetDict).
    return path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists())


def uses_datasets(path: Path, options: DataOptions) -> bool:
    """Whether a local `path` is read through `datasets` rather than as files:
    a saved dataset, a folder the reference names a subset or split of, or a
    folder laid out as a hub dataset repo (data folders, perhaps a README.md
    dataset card, and no data files of its own)."""
    if is_saved_dataset(path):
        return True
    if not path.is_dir():
        return False
    if options:
        return True
    entries = [entry for entry in path.iterdir() if not entry.name.startswith(".")]
    own_files = [e for e in entries if e.is_file() and e.name.lower() != "readme.md"]
    return not own_files and any(e.is_dir() for e in entries)


def dataset_rows(
    location: str, options: DataOptions, *, hub: bool, streaming: bool = False
) -> Iterable[dict[str, Any]]:
    """The rows of the split the options name. `location` is a hub id
    (`hub=True`) or a local folder. StageFailed, naming the data set, when it
    cannot be opened."""
    if not hub:
        folder = Path(location)
        if is_saved_dataset(folder) or (options.subset is not None and is_saved_dataset(folder / options.subset)):
            return load_saved_dataset(folder, options)
        streaming = True  # a local folder: nothing to download, no cache to write
    import datasets

    label = location + options.render("hub" if hub else "path", location)
    revision: dict[str, Any] = {"revision": options.revision} if options.revision else {}
    try:
        name, data_dir = None, None
        if options.subset is not None:
            configs = datasets.get_dataset_config_names(location, **revision)
            name, data_dir = _subset(options.subset, configs, label)
        where = {**revision, **({"data_dir": data_dir} if data_dir else {})}
        # The split names first, so that a wrong one reads the same for every source.
        splits = datasets.get_dataset_split_names(location, config_name=name, **where)
        split = options.split if options.split is not None else default_split(splits, label)
        if split not in splits:
            raise StageFailed(f"{label}: no split {split!r} (splits: {', '.join(splits)})")
        return datasets.load_dataset(location, name, split=split, streaming=streaming, **where)
    except StageFailed:
        raise
    except Exception as exc:  # the hub raises many types: offline, gated, missing, unknown split
        raise StageFailed(f"cannot load dataset {label!r}: {exc}") from exc


def _subset(subset: str, configs: Sequence[str], label: str) -> tuple[str | None, str | None]:
    """(config name, data folder) for a subset: its config, or the data
    folder of a dataset that declares no configs of its own."""
    if subset in configs:
        return subset, None
    if list(configs) == ["default"]:
        return None, subset
    raise StageFailed(f"{label}: no subset {subset!r} (subsets: {', '.join(configs)})")


def load_saved_dataset(folder: Path, options: DataOptions) -> Any:
    """A folder written by save_to_disk (or its subfolder `subset`): the
    dataset, or the split of a DatasetDict the options name (else its
    default split)."""
    import datasets

    if options.subset is not None:
        folder = folder / options.subset
        if not is_saved_dataset(folder):
            raise StageFailed(f"{folder}: no dataset saved with save_to_disk here (subset {options.subset!r})")
    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        split = options.split if options.split is not None else default_split(list(loaded), folder)
        if split not in loaded:
            raise StageFailed(f"{folder}: no split {split!r} (splits: {', '.join(loaded)})")
        return loaded[split]
    if options.split is not None:
        raise StageFailed(f"{folder}: holds one dataset, not splits; leave split out")
    return loaded


def default_split(splits: Sequence[str] | Mapping[str, Any], where: object) -> str:
    """`train`, the only split, or the only one whose name starts with
    `train`; otherwise the reference must name one."""
    names = list(splits)
    if "train" in names:
        return "train"
    if len(names) == 1:
        return names[0]
    trains = [name for name in names if name.startswith("train")]
    if len(trains) == 1:
        return trains[0]
    raise StageFailed(f"{where}: no 'train' split; name one after the data set, e.g. ?split={names[0]} "
                      f"(splits: {', '.join(names)})")
