"""The final JSON line fits a Kubernetes termination message."""

from __future__ import annotations

import json
from pathlib import Path

from carbontrainer.report import TERMINATION_LOG_LIMIT, to_json_line, write_termination_log


def test_line_is_trimmed_to_the_termination_message_limit() -> None:
    result = {"status": "error", "accuracy": None, "error": "x" * 10_000, "notes": ["n"]}
    line = to_json_line(result)
    assert len(line.encode()) <= TERMINATION_LOG_LIMIT
    parsed = json.loads(line)
    assert parsed["status"] == "error" and "accuracy" in parsed and "error" not in parsed


def test_termination_log_written_only_where_it_exists(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    write_termination_log('{"a":1}', log)
    assert not log.exists()
    log.touch()
    write_termination_log('{"a":1}', log)
    assert json.loads(log.read_text()) == {"a": 1}
