"""tests/gateway/test_samples_e2e.py with the nodes' message stores on PostgreSQL (see conftest.py)."""

from ...test_samples_e2e import *  # noqa: F403

# Checks the sample files only; no node, no store.
del test_the_sample_set_is_what_the_suite_expects  # noqa: F821
