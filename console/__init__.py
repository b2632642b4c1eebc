"""Front ends: the `rlhf` command line and the Textual console (`rlhf tui`).

Torch-free by contract. Everything here changes state (runs, judgements,
claims, comments) only through `engine`'s API (`Engine`, `Engine.annotation`)
and reads the store through its read API (`Engine.reads`, typed as
`store.reads.StoreReader`; the runs list through plain sqlite3). Screens see
the app through `console.shell.ConsoleShell`, never `console.app`.
`tests/console/test_layering.py` holds all three.
"""
