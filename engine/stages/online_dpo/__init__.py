"""The online_dpo stage kind: its spec (spec.py) and its run (stage.py)."""
