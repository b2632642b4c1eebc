"""One process of a pretrain stage under `accelerate launch` (used by test_pretrain).

Arguments: workspace root, run id, stage id, cache dir, the spec as JSON, and
optionally STEP RANK: that one process sees a cancel request once it reaches
STEP, as when the processes poll the store at different moments.
Stands in for the engine's worker: builds the StageContext, main process = rank 0.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from engine.errors import StageCancelled
from engine.stages.common.context import StageContext
from engine.stages.pretrain import stage as pretrain
from engine.stages.pretrain.spec import PretrainSpec
from store import open_workspace

RANK = int(os.environ.get("RANK", "0"))


class CancelAt(StageContext):
    stop_at_step: int | None = None

    def set_progress(self, step: int, total: int | None = None) -> None:
        super().set_progress(step, total)
        if self.stop_at_step is not None and step >= self.stop_at_step:
            self.request_stop()


def main() -> None:
    root, run_id, stage_id, cache_dir, spec_json, *cancel = sys.argv[1:]
    workspace = open_workspace(root, create=False)
    ctx = CancelAt(
        store=workspace.store,
        run_id=int(run_id),
        stage_id=int(stage_id),
        stage_name="pretrain",
        spec=PretrainSpec.model_validate_json(spec_json),
        output_dir=workspace.stage_dir(int(run_id), "pretrain"),
        cache_dir=Path(cache_dir),
        stage_outputs={},
        is_main_process=RANK == 0,
    )
    if cancel and int(cancel[1]) == RANK:
        ctx.stop_at_step = int(cancel[0])
    try:
        pretrain.run(ctx)
    except StageCancelled:
        # Exit 0: one process exiting with an error makes the launcher kill the others.
        (ctx.output_dir / f"cancelled-rank{RANK}").touch()
    finally:
        workspace.close()


if __name__ == "__main__":
    main()
