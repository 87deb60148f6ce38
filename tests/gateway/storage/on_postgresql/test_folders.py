"""tests/gateway/test_folders.py with the nodes' message stores on PostgreSQL (see conftest.py)."""

from ...test_folders import *  # noqa: F403

# A naming rule that opens no node and no store: it runs once, in tests/gateway/test_folders.py
# (here the conftest's check that a node used PostgreSQL would fail it).
globals().pop("test_the_inbox_name_of_a_payload_keeps_only_a_sedex_shaped_extension", None)
