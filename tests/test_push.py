"""`rlhf push` (#15 item 4): the card is written, then the repo created and the
folder uploaded, through a fake HfApi (there is no network here: a real
upload is not tried). Bad input is one line, exit 2, and nothing uploaded."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
from huggingface_hub import ModelCard

from console.cli import main
from engine.errors import EngineError, UserInputError
from engine.recipe.model_card import MARKER
from engine.runtime.push_job import LEFT_OUT, run_push
from store import Store, Workspace
from tests.test_model_card import SHA, a_run


class FakeHub:
    """Records what a push asks of the hub, and what the folder held when it was uploaded."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.uploaded: dict[str, str] = {}
        self.fail = fail

    def create_repo(self, repo_id: str, **kwargs: Any) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        if self.fail is not None:
            raise self.fail
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id: str, **kwargs: Any) -> None:
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs: Any) -> None:
        self.calls.append(("upload_folder", kwargs))
        folder = Path(kwargs["folder_path"])
        self.uploaded = {p.name: p.read_text(errors="replace") for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")


@pytest.fixture
def no_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def test_push_writes_the_card_then_uploads_the_folder(store: Store, tmp_path: Path, token: None) -> None:
    _, _, folder = a_run(store, tmp_path)
    (folder / "optimizer.pt").write_bytes(b"pickled state")
    hub = FakeHub()
    result = run_push(folder, "my-org/tiny-sft", store=store, private=True, revision="v1",
                      commit_message="first upload", api=hub)

    assert [name for name, _ in hub.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert hub.calls[0][1] == {"repo_id": "my-org/tiny-sft", "private": True, "exist_ok": True, "repo_type": "model"}
    assert hub.calls[1][1] == {"repo_id": "my-org/tiny-sft", "branch": "v1", "exist_ok": True, "repo_type": "model"}
    assert hub.calls[2][1] == {"repo_id": "my-org/tiny-sft", "folder_path": str(folder.resolve()),
                               "commit_message": "first upload", "revision": "v1", "repo_type": "model",
                               "ignore_patterns": LEFT_OUT}
    # The card was in the folder when it was uploaded, written from the store.
    card = ModelCard(hub.uploaded["README.md"])
    assert card.data.base_model == "tiny-org/base" and "sft" in card.data.tags
    assert MARKER in card.text and SHA in card.text and "# `my-org/tiny-sft`" in card.text
    assert result.left_out == ["optimizer.pt"]
    assert "README.md" in result.uploaded and "rlhf_provenance.json" in result.uploaded
    assert result.message.startswith(f"pushed {folder.resolve()} to my-org/tiny-sft (branch v1): ")


def test_a_public_push_to_main_makes_no_branch(store: Store, tmp_path: Path, token: None) -> None:
    _, _, folder = a_run(store, tmp_path)
    hub = FakeHub()
    run_push(folder, "my-org/tiny-sft", store=store, api=hub)
    assert [name for name, _ in hub.calls] == ["create_repo", "upload_folder"]
    assert hub.calls[0][1]["private"] is False and hub.calls[1][1]["revision"] is None
    assert hub.calls[1][1]["commit_message"] == "Upload final with rlhf-console"


def test_a_hub_failure_is_one_line(store: Store, tmp_path: Path, token: None) -> None:
    _, _, folder = a_run(store, tmp_path)
    with pytest.raises(EngineError, match=r"^push to my-org/x failed: 403 Forbidden: no write access$"):
        run_push(folder, "my-org/x", store=store, api=FakeHub(fail=OSError("403 Forbidden: no write access\nmore")))


def cli(workspace: Workspace, *args: str) -> int:
    return main(["push", *args, "--workspace", str(workspace.root)])


@pytest.fixture
def refuse_hub(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """huggingface_hub.HfApi replaced by one that records any use: bad input must reach none."""
    import huggingface_hub

    used: list[str] = []

    class Refused:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            used.append("HfApi()")

    monkeypatch.setattr(huggingface_hub, "HfApi", Refused)
    return used


@pytest.mark.parametrize(("layout", "expected"), [
    ({"model.safetensors": b""}, r"not a model folder: no config\.json"),
    ({"config.json": b"{}", "pytorch_model.bin": b"x"}, r"has only pickled weights \(pytorch_model\.bin\)"),
    ({"config.json": b"{}"}, r"no weights found \(expected model\.safetensors\)"),
])
def test_a_folder_that_is_not_a_model_is_refused_in_one_line(
    workspace: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str], token: None, refuse_hub: list[str],
    layout: dict[str, bytes], expected: str,
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, content in layout.items():
        (folder / name).write_bytes(content)
    assert cli(workspace, str(folder), "--repo", "my-org/tiny") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"rlhf: {folder}: ")
    assert re.search(expected, err[0]), err
    assert refuse_hub == [] and not (folder / "README.md").exists()


def test_a_missing_token_says_how_to_log_in(
    workspace: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_token: None, refuse_hub: list[str],
) -> None:
    _, _, folder = a_run(workspace.store, tmp_path)
    assert cli(workspace, str(folder), "--repo", "my-org/tiny") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rlhf: no Hugging Face token found: log in with `hf auth login`, or set HF_TOKEN to a token "
                   "with write access"]
    assert refuse_hub == [] and not (folder / "README.md").exists()


@pytest.mark.parametrize("repo", ["tiny", "my-org/", "a/b/c", "my org/x"])
def test_a_repo_that_is_not_org_slash_name_is_refused(
    workspace: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str], token: None, refuse_hub: list[str],
    repo: str,
) -> None:
    _, _, folder = a_run(workspace.store, tmp_path)
    assert cli(workspace, str(folder), "--repo", repo) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"rlhf: --repo {repo!r}: expected a hub repo id ORG/NAME, such as my-org/tiny-sft"]
    assert refuse_hub == []


def test_run_colon_stage_names_that_stage_s_final_model(store: Store, tmp_path: Path, token: None) -> None:
    run_id, ids, folder = a_run(store, tmp_path)
    store.update_stage(ids["sft"], output_path=str(folder))
    hub = FakeHub()
    run_push(f"{run_id}:sft", "my-org/tiny-sft", store=store, api=hub)
    assert hub.calls[-1][1]["folder_path"] == str(folder.resolve())
    assert "README.md" in hub.uploaded

    name = store.get_run(run_id).name
    for ref, message in [
        ("nope:sft", "nope:sft: no such folder, and no run 'nope' in this workspace"),
        (f"{run_id}:rl", f"{run_id}:rl: run '{name}' has no stage 'rl' (stages: pretrain, sft, other)"),
        (f"{name}:pretrain", f"{name}:pretrain: stage 'pretrain' of run '{name}' has no final model (it is pending)"),
    ]:
        with pytest.raises(UserInputError) as caught:
            run_push(ref, "my-org/tiny-sft", store=store, api=hub)
        assert str(caught.value).startswith(message), str(caught.value)
    assert len(hub.calls) == 2  # the refusals reached no hub
