"""tests/gateway/test_node.py with the nodes' message stores on PostgreSQL (see conftest.py)."""

from ...test_node import *  # noqa: F403
