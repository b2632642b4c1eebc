"""Test support for test_ppo's two-process test, loaded through RLHF_STAGE_PLUGINS.

In a worker started with RLHF_TEST_PPO_CANCEL=N, rank 1 alone asks to stop
once it reports update N, as when ranks poll the store at different moments:
the ranks' vote must still stop both after the same update.
"""

from __future__ import annotations

import os

from engine.stages.common.context import StageContext


def _install() -> None:
    at = os.environ.get("RLHF_TEST_PPO_CANCEL")
    if at is None or os.environ.get("RANK") != "1":
        return
    original = StageContext.set_progress

    def set_progress(self: StageContext, step: int, total: int | None = None) -> None:
        original(self, step, total)
        if step >= int(at):
            self.request_stop()

    StageContext.set_progress = set_progress  # type: ignore[method-assign]


_install()
