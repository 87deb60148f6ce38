"""tests/gateway/test_node_audit.py with the nodes' message stores on PostgreSQL (see conftest.py)."""

from ...test_node_audit import *  # noqa: F403
