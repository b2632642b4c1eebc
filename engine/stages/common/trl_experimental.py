"""Imported (for its effect) before a stage imports `trl.experimental`: that
package warns, on import, that its APIs may change. A stage pins trl's
version and is tested against it, so the warning would tell the person
reading the stage's log nothing; trl's own switch turns it off."""

from __future__ import annotations

import os

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
