"""The offline built-ins: stdlib-docs corpus, bpe-4k tokenizer, llama presets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.errors import StageFailed
from engine.stages.common import models, tokenizer
from engine.stages.common import stdlib_corpus as corpus
from engine.stages.common.context import Source

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tok(shared_cache: Path):
    return tokenizer.load_tokenizer(Source("builtin", "bpe-4k"), shared_cache)


# --- corpus -------------------------------------------------------------------


@pytest.mark.slow  # reads every docstring of the stdlib twice, in a fresh interpreter
def test_corpus_is_deterministic_and_imports_no_module() -> None:
    # In a fresh interpreter: reading docstrings must not import the modules
    # they document (antigravity would open a browser), nor anything else.
    script = (
        "import json, sys\n"
        "from engine.stages.common import stdlib_corpus as corpus\n"
        "before = set(sys.modules)\n"
        "first = corpus.stdlib_docstrings()\n"
        "second = corpus.stdlib_docstrings()\n"
        "print(json.dumps({'same': first == second, 'new_modules': sorted(set(sys.modules) - before),\n"
        "                  'docs': len(first), 'chars': sum(map(len, first)), 'shortest': min(map(len, first))}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    report = json.loads(out.stdout)
    assert report["same"]
    assert report["new_modules"] == []
    assert report["docs"] > 1000
    assert 1_000_000 <= report["chars"] <= corpus.MAX_CHARS + 100_000
    assert report["shortest"] >= corpus.MIN_CHARS


def test_corpus_is_cached_as_jsonl(shared_cache: Path) -> None:
    docs = corpus.load_stdlib_docs(shared_cache)
    path = corpus.corpus_path(shared_cache)
    assert path.is_file()
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[0])["text"] == docs[0]
    assert len(set(docs)) == len(docs)  # de-duplicated
    assert not any(p.name.endswith(".tmp") for p in path.parent.iterdir())


def test_publishing_tolerates_a_lost_race(tmp_path: Path) -> None:
    folder = tmp_path / "tokenizers" / "thing"

    def build_while_another_process_wins(tmp: Path) -> None:
        (tmp / "mine.txt").write_text("loser")
        folder.mkdir(parents=True)  # the other process renames its copy in first
        (folder / "theirs.txt").write_text("winner")

    tokenizer._publish_folder(folder, build_while_another_process_wins)
    assert [p.name for p in folder.iterdir()] == ["theirs.txt"]
    assert [p.name for p in folder.parent.iterdir()] == ["thing"]  # no temporary left behind


# --- tokenizer ----------------------------------------------------------------


def test_tokenizer_round_trips_any_text(tok) -> None:
    assert len(tok) == 4096
    text = "def f(x):\n    return x ** 2  # naïve — 日本語 🚀\n\n\tTabs too."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok(text)["input_ids"] == ids  # byte-level BPE adds no bos/eos by itself


def test_tokenizer_special_tokens(tok, shared_cache: Path) -> None:
    assert tok.eos_token == "<|end|>"
    assert tok.pad_token == "<|pad|>"
    assert tok.bos_token == "<|begin|>"
    assert len({tok.pad_token_id, tok.eos_token_id, tok.bos_token_id}) == 3
    for special in ["<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]:
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    # What the stages load later is the saved folder, through the Auto class.
    again = AutoTokenizer.from_pretrained(tokenizer.bpe_4k_dir(shared_cache))
    assert again.eos_token_id == tok.eos_token_id
    assert again.chat_template == tokenizer.CHAT_TEMPLATE


def test_tokenizer_training_is_deterministic(shared_cache: Path) -> None:
    docs = corpus.load_stdlib_docs(shared_cache)[:800]
    first = tokenizer.train_bpe(docs, 1024).backend_tokenizer.to_str()
    second = tokenizer.train_bpe(docs, 1024).backend_tokenizer.to_str()
    assert first == second


def test_chat_template_marks_assistant_tokens(tok) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "Four."},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == "<|system|>\nBe brief.<|end|><|user|>\nWhat is 2+2?<|end|><|assistant|>\nFour.<|end|>"
    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert text.startswith(prompt) and prompt.endswith("<|assistant|>\n")

    encoded = tok.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    assert len(ids) == len(mask)
    assistant_ids = [i for i, m in zip(ids, mask) if m]
    # The loss covers the answer and the eos that ends it, nothing of the prompt.
    assert tok.decode(assistant_ids) == "Four.<|end|>"
    assert assistant_ids[-1] == tok.eos_token_id


def test_unknown_builtin_tokenizer_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(StageFailed, match="bpe-99k"):
        tokenizer.load_tokenizer(Source("builtin", "bpe-99k"), tmp_path)


# --- models -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("llama-1m", 0.7e6, 1.3e6), ("llama-4m", 3.5e6, 4.5e6), ("llama-10m", 8e6, 12e6)],
)
def test_model_presets(tok, name: str, low: float, high: float) -> None:
    model = models.load_model_for_training(Source("builtin", name), tok, seed=0)
    config = model.config
    assert low <= models.count_parameters(model) <= high
    assert config.vocab_size == len(tok)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (
        tok.pad_token_id, tok.bos_token_id, tok.eos_token_id,
    )
    assert config.max_position_embeddings >= 2048
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_llama_4m_matches_the_measured_shape(tok) -> None:
    config = models.preset_config("llama-4m", tok)
    assert (config.hidden_size, config.num_hidden_layers) == (256, 4)
    assert (config.num_attention_heads, config.num_key_value_heads) == (8, 4)


def test_preset_init_follows_the_seed(tok) -> None:
    def weights(seed: int) -> torch.Tensor:
        model = models.load_model_for_training(Source("builtin", "llama-1m"), tok, seed=seed)
        return model.model.layers[0].self_attn.q_proj.weight.detach().clone()

    assert torch.equal(weights(1), weights(1))
    assert not torch.equal(weights(1), weights(2))


def test_model_loads_from_a_local_folder(tok, tmp_path: Path) -> None:
    model = models.load_model_for_training(Source("builtin", "llama-1m"), tok, seed=3)
    model.save_pretrained(tmp_path / "m")
    loaded = models.load_model_for_training(Source("path", str(tmp_path / "m")), tok, seed=0)
    assert loaded.dtype == torch.float32
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path / "m"), type(model))


def test_missing_model_folder_fails_clearly(tok, tmp_path: Path) -> None:
    with pytest.raises(StageFailed, match="nowhere"):
        models.load_model_for_training(Source("path", str(tmp_path / "nowhere")), tok, seed=0)
    with pytest.raises(StageFailed, match="llama-7b"):
        models.load_model_for_training(Source("builtin", "llama-7b"), tok, seed=0)
