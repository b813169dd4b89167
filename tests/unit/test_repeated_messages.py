"""The agent's filter for log lines a client can trigger at will (connections.RepeatedMessageFilter)."""

from __future__ import annotations

import logging
import time
import uuid

from hypermesh.agent.connections import RepeatedMessageFilter


def test_the_repeated_message_filter_reports_each_kind_with_its_count_once_per_interval():
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.Logger(f"test-{uuid.uuid4().hex}")  # not registered: nothing else sees it
    logger.addHandler(Keep())
    logger.addFilter(RepeatedMessageFilter(interval_s=0.5))
    for _ in range(100):
        logger.warning("Invalid HTTP request received.")
        logger.warning("Unsupported upgrade request.")
        logger.warning("No supported WebSocket library detected. Please use ...")
    logger.warning("something else")
    time.sleep(0.6)
    logger.warning("Invalid HTTP request received.")
    assert records == [
        "invalid HTTP requests (answered 400): 1 since the last report (logged at most every 0.5s)",
        "upgrade requests refused (the agent serves no WebSocket): 1 since the last report (logged at most every 0.5s)",
        "something else",
        # The 99 held back in the first interval, and this one.
        "invalid HTTP requests (answered 400): 100 since the last report (logged at most every 0.5s)",
    ]
