"""tests/gateway/test_node_tampering.py with the nodes' message stores on PostgreSQL (see conftest.py)."""

from ...test_node_tampering import *  # noqa: F403
