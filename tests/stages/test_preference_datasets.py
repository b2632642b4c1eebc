"""Preferences from a datasets folder or a hub dataset (issue 15 item 3), through the stages' loader.
Needs /tmp/s20/item3/preference_data.patch applied to engine/stages/common/preference_data.py."""

from __future__ import annotations

from pathlib import Path

import datasets

from engine.stages.common.preference_data import load_preference_data
from engine.stages.common.preference_spec import PreferenceDataSpec
from tests.stages.test_hub_data import hh_row


def test_a_datasets_folder_split_in_preferences(make_context, tmp_path: Path) -> None:
    folder = tmp_path / "hh"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list([hh_row("train", i) for i in range(6)]),
        "test": datasets.Dataset.from_list([hh_row("test", i) for i in range(2)]),
    }).save_to_disk(str(folder))
    spec = PreferenceDataSpec.model_validate({"kind": "reward", "preferences": f"path:{folder}?split=test"})
    data = load_preference_data(make_context(spec), spec)
    assert data.summary["pairs"] == 2 and data.summary["annotators"] == {"import:hh?split=test": 2}
    assert data.summary["files"] == [f"{folder}?split=test"]
