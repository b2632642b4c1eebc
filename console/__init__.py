"""Front ends: the `rlhf` command line and the Textual console (`rlhf tui`).

Torch-free by contract: everything here acts through `engine`'s API.
"""
