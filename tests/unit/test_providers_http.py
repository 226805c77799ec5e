"""The shared HTTP plumbing's promises about its own dependency floor."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from carbonaware.providers.http import make_session

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
# ``Retry(retry_after_max=...)`` first shipped in urllib3 2.6.3: the 2.6.2 wheel's
# urllib3/util/retry.py has no such parameter, the 2.6.3 wheel's has (docs/providers.md).
RETRY_AFTER_MAX_SINCE = (2, 6, 3)


def test_the_urllib3_floor_has_every_retry_option_make_session_uses():
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (spec,) = [d for d in dependencies if d.startswith("urllib3")]
    floor = tuple(int(n) for n in re.search(r">=\s*([\d.]+)", spec).group(1).split("."))
    assert floor >= RETRY_AFTER_MAX_SINCE, spec
    retry = make_session().get_adapter("https://").max_retries
    assert retry.retry_after_max == 30  # the option is there and used
