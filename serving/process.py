"""The service's process: its garbage collector's settings, its log of clients' mistakes, and stopping
a server started as a subprocess with the workers it forked into sessions of their own."""

from __future__ import annotations

import gc
import logging
import signal
import subprocess

# The logger BentoML's API endpoints log a failed call on ("Exception on /predict [POST]", with traceback).
BENTOML_ENDPOINT_LOGGER = "bentoml._internal.server.http_app"


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


def client_error_status(error: BaseException | None) -> int | None:
    """The HTTP status BentoML answers `error` with when it is the client's mistake (4xx), else None:
    a body that does not validate is a 400, a BentoMLException carries its own status."""
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return 400
    if isinstance(error, BentoMLException) and 400 <= error.error_code.value < 500:
        return int(error.error_code.value)
    return None


class ClientErrorLines(logging.Filter):
    """BentoML logs every failed API call at ERROR with a traceback, a client's mistake too: an alert on
    ERROR lines would page someone for each malformed request. A client error becomes one WARNING line
    with the status, the route and the error's type (no message: a validation error names the fields a
    client sent, and a field name is the client's text); a server error is left as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = client_error_status(record.exc_info[1] if record.exc_info else None)
        if status is not None:  # an error came with the record
            record.args = (status, *(record.args or ()), type(record.exc_info[1]).__name__)
            record.msg = "client error %d on %s [%s]: %s"
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_client_errors() -> None:
    """Log clients' mistakes on BentoML's API endpoints as `ClientErrorLines` (once per process)."""
    logger = logging.getLogger(BENTOML_ENDPOINT_LOGGER)
    if not any(isinstance(f, ClientErrorLines) for f in logger.filters):
        logger.addFilter(ClientErrorLines())


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
