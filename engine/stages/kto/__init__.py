"""The kto stage kind: its spec (spec.py) and its run (stage.py)."""
