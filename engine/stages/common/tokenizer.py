"""Tokenizers: the built-in `bpe-4k`, and `load_tokenizer` for any source.

`bpe-4k` is a byte-level BPE trained on the `stdlib-docs` corpus (about a
second). Byte-level means any text round-trips, whatever its characters.
Its special tokens:

- `<|pad|>`  padding only; kept apart from eos so that a collator that masks
  padding out of the loss never masks the end of a turn too;
- `<|begin|>` a bos the model config can point at; the tokenizer adds none;
- `<|end|>`  eos: ends a pretraining document and every chat turn, so
  generation stops at the end of the assistant's turn;
- `<|system|>`, `<|user|>`, `<|assistant|>` open a chat turn.

The chat template wraps assistant content (and its `<|end|>`) in
`{% generation %}` so SFT can train on the assistant's tokens only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from engine.errors import StageFailed
from engine.stages.common import stdlib_corpus as corpus
from engine.stages.common.context import Source
from store.permissions import folder_mode

NAME = "bpe-4k"
VOCAB_SIZE = 4096
#: The presets' context length; documents longer than this still tokenize
#: (packing cuts them into blocks), it is what `truncation=True` cuts to.
MODEL_MAX_LENGTH = 2048

PAD = "<|pad|>"
BOS = "<|begin|>"
EOS = "<|end|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}

# Each turn: role token, newline, content, <|end|>. No text between turns: the
# role tokens already separate them, and a newline after <|end|> would be one
# more token the assistant must learn to emit after it has finished.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unsupported chat role: ' + message['role']) }}"
    "{%- endif -%}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{%- else -%}"
    "{{ message['content'] + eos_token }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)


def tokenizer_source_for(model: Source, named: Source | None) -> Source:
    """Which tokenizer a stage starting from `model` uses: the one the spec
    names; else the built-in one for a preset, which starts from nothing;
    else the checkpoint's own, since its embeddings were learned for it."""
    if named is not None:
        return named
    return Source("builtin", NAME) if model.kind == "builtin" else model


def load_stage_tokenizer(model: Source, named: Source | None, cache_dir: Path, *, chat: bool = True,
                         log: Callable[[str], object] = lambda _message: None,
                         ) -> tuple[Source, PreTrainedTokenizerBase]:
    """The tokenizer of a stage starting from `model` (tokenizer_source_for),
    loaded. With `chat`, one without a chat template gets the built-in one
    (its role markers are plain text to a foreign tokenizer), so prompts and
    answers read as SFT framed them; that is logged."""
    source = tokenizer_source_for(model, named)
    tokenizer = load_tokenizer(source, cache_dir)
    if chat and not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
        log("the tokenizer has no chat template: using the built-in one")
    return source, tokenizer


def load_tokenizer(source: Source, cache_dir: Path) -> PreTrainedTokenizerBase:
    """A tokenizer from a built-in name, a local folder or a hub id."""
    folder: Path | str  # a built-in's folder, or a local folder or hub id as given
    if source.kind == "builtin":
        if source.value != NAME:
            raise StageFailed(f"unknown built-in tokenizer {source.value!r} (known: {NAME})")
        folder = ensure_bpe_4k(cache_dir)
    else:
        folder = source.value
    try:
        # Local folders and hub ids take the same path; a hub id needs a network.
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise StageFailed(f"cannot load a tokenizer from {source.value}: {exc}") from exc
    return tokenizer


def bpe_4k_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "tokenizers" / NAME


def ensure_bpe_4k(cache_dir: Path) -> Path:
    """Train and save `bpe-4k` into the cache unless it is there; return the folder."""
    folder = bpe_4k_dir(cache_dir)
    if not folder.exists():
        texts = corpus.load_stdlib_docs(cache_dir)
        _publish_folder(folder, lambda tmp: train_bpe(texts, VOCAB_SIZE).save_pretrained(tmp))
    return folder


def train_bpe(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE with our special tokens and chat template."""
    specials = [PAD, BOS, EOS, *ROLE_TOKENS.values()]
    model = Tokenizer(models.BPE())
    # No prefix space: "Return" at the start of a text and after a newline tokenize alike.
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    model.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,  # listed first, so they get ids 0..5
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, so nothing is unknown
        min_frequency=2,
        show_progress=False,
    )
    model.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=model,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        # transformers 5 saves these as `extra_special_tokens`; they never split.
        extra_special_tokens=list(ROLE_TOKENS.values()),
        model_max_length=MODEL_MAX_LENGTH,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _publish_folder(folder: Path, build: Callable[[Path], object]) -> None:
    """Build into a temporary folder beside `folder`, then rename it into place.

    A folder rename is atomic, so readers see either nothing or a complete
    folder. If another process published first, its copy wins and ours goes."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        build(tmp)
        tmp.chmod(folder_mode())  # mkdtemp makes it private; the cache is shared like any output
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():
                raise  # not a lost race: a real error
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def describe_tokenizer(tokenizer: PreTrainedTokenizerBase, source: Source) -> dict[str, object]:
    """What a stage records about its tokenizer in its resolved config."""
    return {
        "source": f"{source.kind}:{source.value}",
        "vocabulary": len(tokenizer),
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
    }
