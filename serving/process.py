"""Stopping a server started as a subprocess, with the workers it forked into sessions of their own."""

from __future__ import annotations

import signal
import subprocess


def stop_process_tree(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop `process` and its children, gracefully (SIGTERM) if they let us, by force if not."""
    import psutil  # a dependency of bentoml

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        child.kill()
