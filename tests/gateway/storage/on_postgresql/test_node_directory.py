"""tests/gateway/test_node_directory.py with the nodes' message stores on PostgreSQL (see conftest.py)."""

from ...test_node_directory import *  # noqa: F403
