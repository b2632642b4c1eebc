"""Builders for the offline built-ins named in `engine/spec/catalog.py`.

- `corpus`: the `stdlib-docs` text corpus (docstrings read from the standard
  library's source files).
- `tokenizer`: the `bpe-4k` tokenizer, trained on that corpus, and
  `load_tokenizer` for every kind of source.
- `models`: the `llama-*` presets and `load_model_for_training` for every kind
  of source.

Everything built is cached under the workspace's cache folder, written to a
temporary name first and renamed into place, so two processes (or two stages)
building the same thing at once both end up reading one complete copy.

This package imports nothing itself: importing `corpus` must not pull in
torch, and callers import the module they need.
"""
