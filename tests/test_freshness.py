"""Every stored notebook is fresh: its outputs were written by the refresh command from the code,
library and lock as they are now, and nobody edited them since. No kernel: this takes seconds,
and gives the same answer on every machine (see course_lib.tools.provenance)."""

from pathlib import Path

import nbformat
import pytest

from course_lib.tools.provenance import REFRESH_HINT, staleness

ROOT = Path(__file__).resolve().parents[1]
STORED_WITH_OUTPUTS = sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("solutions/*.ipynb")])


@pytest.mark.parametrize(
    "path", STORED_WITH_OUTPUTS, ids=[p.relative_to(ROOT).as_posix() for p in STORED_WITH_OUTPUTS]
)
def test_stored_outputs_match_their_provenance(path):
    reasons = staleness(nbformat.read(path, as_version=4), ROOT)
    name = path.relative_to(ROOT).as_posix()
    assert not reasons, (
        f"{name} is stale: " + "; ".join(reasons) + ". Refresh it: "
        f"`{REFRESH_HINT}` (all) or `course notebooks refresh {name}`, then commit the result."
    )
