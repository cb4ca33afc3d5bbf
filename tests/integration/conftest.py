"""Every test in this folder runs against the real local stack (Kafka, MariaDB, Redis): it is
started once per session if it is not running. The root conftest marks these tests `integration`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import REPO_ROOT


@pytest.fixture(scope="session", autouse=True)
def stack() -> None:
    """The real local stack (Kafka, MariaDB, Redis): started if it is not running."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "stack" / "stack.py"), "up"], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.fail(f"the local stack did not come up:\n{result.stdout}\n{result.stderr}")
