"""tests/gateway/test_folders.py with the nodes' message stores on PostgreSQL (see conftest.py)."""

from ...test_folders import *  # noqa: F403
