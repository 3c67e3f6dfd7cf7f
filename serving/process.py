"""The service's process: its garbage collector's settings, and stopping a server started as a
subprocess with the workers it forked into sessions of their own."""

from __future__ import annotations

import gc
import signal
import subprocess


def settle_collector(full_threshold: int) -> None:
    """Set a worker's garbage collector for serving, once what lives as long as the process is loaded.

    What startup left unreachable is collected; everything still alive (libraries, the model, settings)
    is frozen out of the collector's sight; and a full collection waits for `full_threshold`
    middle-generation collections instead of Python's 10. Each request leaves objects that live on for
    a while (BentoML's request timer keeps the request's context until its timeout), so under load the
    old generation grows fast enough for a full collection every 2-3 s, each holding every waiting
    request for 20-200 ms; young collections still free short-lived cycles as before.
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, full_threshold)


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
