"""The orpo stage kind: its spec (spec.py) and its run (stage.py)."""
