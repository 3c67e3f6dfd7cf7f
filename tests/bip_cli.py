"""The `bip` command line as a user runs it, for the tests: a real process (errors become a message and
an exit status in `bip.cli.main`), with its own BIP_HOME and none of this process's store or MLflow settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_bip(*args: str, home: Path, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("BIP_", "MLFLOW_"))}
    environment.update({"BIP_HOME": str(home), **env})
    command = [sys.executable, "-c", "from bip.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, env=environment, cwd=REPO, input=stdin, timeout=300)
