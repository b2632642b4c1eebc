"""Stage implementations. Each module `engine.stages.KIND.stage` defines
`run(ctx: StageContext) -> None` and is imported only inside a worker process,
so torch, transformers, trl and peft never load in the console or the CLI.

A stage saves its output to `ctx.final_dir`, reports through `ctx`, checks
`ctx.should_stop()` between steps and, when it is true, saves a checkpoint and
raises `engine.errors.StageCancelled`. Each kind's spec sits beside its
run (engine/stages/KIND/spec.py, torch-free); engine/stages/registry.py maps
each kind to both, and plugins register theirs there.
"""
