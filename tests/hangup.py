"""For tests that hang up on a process as an SSH disconnect would.

A process inherits an ignored SIGHUP from whoever started the test run
(`nohup pytest`, some CI runners), and then a hangup cannot end it. These
tests check what hangups do, so the processes they start take SIGHUP's
default action whatever the runner's setting: pass this as `preexec_fn`.
"""

from __future__ import annotations

import signal


def default_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
