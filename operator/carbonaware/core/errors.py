"""The project-wide user error: input a person can fix, reported as one line (carbonctl:
exit 2; the operator: a Failed condition), never a traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad configuration: an unknown provider name, a missing token, an unreadable trace."""
