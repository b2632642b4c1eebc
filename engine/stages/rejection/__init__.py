"""The rejection stage kind (rejection sampling): its spec (spec.py) and its run (stage.py)."""
