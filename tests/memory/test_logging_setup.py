"""Logged exceptions keep their traceback and type, never their message (memory.logging_setup): through the
service's handler, and through a real uvicorn serving the app, whose own error lines use that handler too. Python
warnings are logged with their category and place, never their message."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from memory import logging_setup
from memory.api.serving import uvicorn_options
from memory.settings import Settings
from tests.conftest import uvicorn_in_thread

SECRET = "Dr Ana Lopez, ana.lopez@example.com"  # what a driver or a parser could quote in an exception


@pytest.fixture
def configured(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    import threading

    root, access = logging.getLogger(), logging.getLogger(logging_setup.ACCESS_LOGGER)
    handlers, level, access_level, hook = root.handlers[:], root.level, access.level, threading.excepthook
    show_warning = warnings.showwarning
    try:
        yield
    finally:
        root.handlers, root.level, threading.excepthook = handlers, level, hook
        warnings.showwarning = show_warning
        access.setLevel(access_level)


def _fail() -> None:
    try:
        raise KeyError(SECRET)
    except KeyError as exc:
        raise RuntimeError(f"could not store {SECRET}") from exc


def _warn_quoting_the_document() -> int:
    """Warns as a parser library does about what it read (openpyxl a cell, pypdf an object); the line it warned at."""
    warnings.warn(f"could not read cell A1: {SECRET} 4111-1111-1111-1111", UserWarning, stacklevel=1)
    return sys._getframe().f_lineno - 1


@pytest.mark.parametrize("json_logs", [True, False])
def test_a_warning_is_logged_with_its_category_and_place_never_its_message(
        configured: None, capsys: pytest.CaptureFixture[str], json_logs: bool) -> None:
    logging_setup.configure("INFO", json_logs=json_logs)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # as the service shows it (the suite's filter makes it an error)
        lineno = _warn_quoting_the_document()
    # logging's own hook, should a library turn it on (logging.captureWarnings), logs the warning's full text
    full_text = f"x.py:1: UserWarning: could not read {SECRET}\n"
    logging.getLogger("py.warnings").warning(full_text)
    err = capsys.readouterr().err
    assert "Lopez" not in err and "4111" not in err and "could not read" not in err, err
    lines = err.splitlines()
    if json_logs:
        lines = [f"{x['name']} {x['message']}" for x in map(json.loads, lines)]
    where = f"warning category=UserWarning module=tests.memory.test_logging_setup lineno={lineno}"
    assert "py.warnings" in lines[0] and lines[0].endswith(where), lines
    assert lines[1].endswith("py.warnings: warning (message not logged: it may quote the document)"), lines


@pytest.mark.parametrize("json_logs", [True, False])
def test_a_logged_exception_keeps_its_frames_and_types_not_its_messages(
        configured: None, capsys: pytest.CaptureFixture[str], json_logs: bool) -> None:
    logging_setup.configure("INFO", json_logs=json_logs)
    try:
        _fail()
    except RuntimeError:
        logging.getLogger("memory.test").exception("store.failed error=%s", "RuntimeError")
    err = capsys.readouterr().err
    assert SECRET not in err and "ana.lopez" not in err
    text = json.loads(err.strip().splitlines()[-1])["exc_info"] if json_logs else err
    assert "store.failed error=RuntimeError" in err
    assert "in _fail" in text and 'raise KeyError(SECRET)' in text  # where it was raised: frames and source lines
    assert "KeyError (message not logged)" in text and "RuntimeError (message not logged)" in text
    assert "direct cause" in text


def test_uvicorn_logs_an_unhandled_error_through_the_services_handler(
        configured: None, capsys: pytest.CaptureFixture[str]) -> None:
    """Starlette answers 500 and re-raises; uvicorn logs "Exception in ASGI application" with the traceback."""
    logging_setup.configure("INFO", json_logs=True)
    app = FastAPI()

    @app.get("/boom")
    def boom() -> None:
        _fail()

    options = {k: v for k, v in uvicorn_options(Settings()).items() if k == "log_config"}
    assert options == {"log_config": None}
    with uvicorn_in_thread(app, log_level="info", **options) as port:
        assert httpx.get(f"http://127.0.0.1:{port}/boom").status_code == 500
    err = capsys.readouterr().err
    lines: list[dict[str, Any]] = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line["name"] == "uvicorn.error" and "Exception in ASGI application" in line["message"]
               for line in lines), err
    assert "color_message" not in err and "\x1b[" not in err  # uvicorn's terminal copy of its lines
    assert SECRET not in err  # the source line `raise RuntimeError(f"could not store {SECRET}")` is, not its value
    assert any("RuntimeError (message not logged)" in line.get("exc_info", "") for line in lines)


def test_a_threads_and_the_loops_unhandled_errors_are_logged_without_messages(
        configured: None, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio
    import gc
    import threading

    logging_setup.configure("INFO", json_logs=True)
    worker = threading.Thread(target=_fail, name="repair")
    worker.start()
    worker.join()

    async def lose_a_failed_task() -> None:
        async def boom() -> None:
            _fail()

        lost = asyncio.get_running_loop().create_task(boom())
        await asyncio.sleep(0.01)
        del lost
        gc.collect()  # "Task exception was never retrieved", logged by the loop

    asyncio.run(lose_a_failed_task())
    err = capsys.readouterr().err
    assert SECRET not in err, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line["message"] == "thread.unhandled thread=repair error=RuntimeError" for line in lines), err
    assert any(line["name"] == "asyncio" and line["message"] == "Task exception was never retrieved"
               for line in lines), err


def test_the_access_log_names_routes_never_ids_or_queries_whatever_the_level(
        configured: None, capsys: pytest.CaptureFixture[str], api: Any) -> None:
    """uvicorn's access line carried the path and query (principal ids, external keys, users acted for) and the
    client's address; the service's own line has the route template, the status and the duration."""
    assert uvicorn_options(Settings())["access_log"] is False
    logging_setup.configure("WARNING", json_logs=True, access_log=True)
    api.client.get("/v1/principals/ana.lopez@example.com", headers=api.admin)
    api.client.get("/v1/audit", headers=api.admin, params={"acting_for": "ana.lopez@example.com"})
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    access = [x["message"] for x in lines if x["name"] == logging_setup.ACCESS_LOGGER]
    assert [m.split(" ms=")[0] for m in access] == [
        "api.access method=GET route=/v1/principals/{principal_id} status=404",
        "api.access method=GET route=/v1/audit status=200"]
    assert all(x["request_id"] != "-" for x in lines if x["name"] == logging_setup.ACCESS_LOGGER)
    logging_setup.configure("INFO", json_logs=True, access_log=False)
    api.client.get("/healthz")
    assert logging_setup.ACCESS_LOGGER not in capsys.readouterr().err


def test_the_parsers_own_log_lines_never_carry_the_document(
        configured: None, capsys: pytest.CaptureFixture[str]) -> None:
    """pandoc's warnings quote the text they could not convert (pypandoc logs them, and adds a raw stderr handler
    of its own to a logger without one); pdfminer's debug lines carry a page's tokens. In process, at DEBUG:
    the records keep their logger and level, never their message."""
    from ingest.parse import parse_document
    from tests.ingest.conftest import _pdf

    logging_setup.configure("DEBUG", json_logs=True)
    rst = f"Notes\n=====\n\nMath :math:`\\begin{{AnaLopez}} {SECRET} \\badcmd{{` here.\n\nThe rest of the notes.\n"
    parse_document(rst.encode(), "notes.rst", max_bytes=1_000_000)
    parse_document(_pdf([["Revenue grew for Dr Ana Lopez in every region."]]), "report.pdf", max_bytes=1_000_000)
    err = capsys.readouterr().err
    assert "ana.lopez" not in err and "AnaLopez" not in err and "Revenue grew" not in err, err[-2000:]
    assert "message not logged" in err  # pandoc did warn: its record is there, without the text
    assert not [h for h in logging.getLogger("pypandoc").handlers if not isinstance(h, logging.NullHandler)]
