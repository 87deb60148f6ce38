"""tests/gateway/test_node_policy.py with the nodes' message stores on PostgreSQL (see conftest.py)."""

from ...test_node_policy import *  # noqa: F403
