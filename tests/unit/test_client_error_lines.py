"""BentoML's log of failed API calls: a client's mistake is one WARNING line without a traceback or the
error's message; a server error keeps BentoML's ERROR with its traceback."""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus

import pytest
from bentoml.exceptions import BadInput, BentoMLException
from pydantic import BaseModel, ValidationError

from serving.process import BENTOML_ENDPOINT_LOGGER, ClientErrorLines, client_error_status, quiet_client_errors


class Body(BaseModel):
    birth_year: int


def validation_error(value: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Body.model_validate({"birth_year": value})
    return caught.value


def logged(error: BaseException) -> logging.LogRecord:
    """The record BentoML's `log_exception` makes for `error`, after the filter."""
    records: list[logging.LogRecord] = []
    logger = logging.getLogger(f"test.client-errors.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addFilter(ClientErrorLines())
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        raise error
    except BaseException:
        logger.error("Exception on %s [%s]", "/predict", "POST", exc_info=True)
    return records[0]


def test_a_validation_error_is_one_warning_line_without_the_message():
    record = logged(validation_error("QX-secret-4417"))
    assert record.levelno == logging.WARNING and record.levelname == "WARNING"
    assert record.getMessage() == "client error 400 on /predict [POST]: ValidationError"
    assert record.exc_info is None and record.exc_text is None
    assert "birth_year" not in logging.Formatter().format(record)  # nor a field name the client sent


def test_a_bentoml_client_error_keeps_its_status():
    record = logged(BadInput("QX-secret-4417"))
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "client error 400 on /predict [POST]: BadInput"
    assert "QX-secret-4417" not in logging.Formatter().format(record)


@pytest.mark.parametrize("error", [RuntimeError("boom"), BentoMLException("boom")])  # the latter is a 500
def test_a_server_error_keeps_bentomls_error_and_traceback(error):
    record = logged(error)
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "Exception on /predict [POST]"
    assert "Traceback" in logging.Formatter().format(record)


def test_client_error_status():
    assert client_error_status(validation_error("x")) == 400
    assert client_error_status(BentoMLException("x", error_code=HTTPStatus.UNSUPPORTED_MEDIA_TYPE)) == 415
    assert client_error_status(BentoMLException("x")) is None
    assert client_error_status(ValueError("x")) is None
    assert client_error_status(None) is None


def test_quiet_client_errors_adds_one_filter_however_often_called():
    logger = logging.getLogger(BENTOML_ENDPOINT_LOGGER)
    before = list(logger.filters)
    try:
        quiet_client_errors()
        quiet_client_errors()
        assert sum(isinstance(f, ClientErrorLines) for f in logger.filters) == 1
    finally:
        logger.filters = before
