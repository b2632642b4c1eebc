"""Process control: the engine's API and everything that runs a run.

`api.Engine` submits, follows, cancels and resumes runs; `launcher` starts a
run's detached supervisor process, which (`supervisor`) runs each stage as a
worker child (`worker`), capturing its output (`log_capture`), leasing device
slots (`devices`) and proving it is alive (`liveness`). `updates` are what
following a run yields; `jobs` and `export_job` are small one-stage runs that
the CLI and console start (generate, rank, score, export). Torch-free.
"""
