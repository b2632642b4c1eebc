"""Front ends: the `rlhf` command line and (soon) the Textual console.

Torch-free by contract: everything here acts through `engine`'s API.
"""
