"""The cpo stage kind (CPO and SimPO): its spec (spec.py) and its run (stage.py)."""
