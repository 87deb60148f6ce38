"""tests/gateway/test_admin.py with the nodes' message stores on PostgreSQL (see conftest.py)."""

from ...test_admin import *  # noqa: F403

# Not store tests: it starts a node *process*, which opens its configured (SQLite) store.
del test_sighup_reloads_the_policies_of_a_running_node_process  # noqa: F821
