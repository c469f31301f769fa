"""The API freezes its start-up objects, so full garbage collections no longer walk them."""

from __future__ import annotations

import json
import subprocess
import sys

from core.settings import PROJECT_ROOT

# A fresh interpreter: freezing is once per process, and this one is pytest's.
STARTS_THE_APP = """
import gc, json
from fastapi.testclient import TestClient
from api.app import app
before = len(gc.get_objects())
with TestClient(app) as client:
    client.get("/health")
    print(json.dumps({"before": before, "frozen": gc.get_freeze_count(), "walked": len(gc.get_objects())}))
"""


def test_start_up_objects_are_out_of_the_collectors_walks() -> None:
    done = subprocess.run(
        [sys.executable, "-c", STARTS_THE_APP], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["frozen"] >= seen["before"] * 0.8, seen  # most of what the imports made
    assert seen["walked"] < seen["before"] * 0.2, seen  # a full collection now walks a small remainder
