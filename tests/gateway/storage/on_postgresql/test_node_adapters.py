"""tests/gateway/test_node_adapters.py with the nodes' message stores on PostgreSQL (see conftest.py)."""

from ...test_node_adapters import *  # noqa: F403
