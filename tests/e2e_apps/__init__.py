"""Applications loaded by worker subprocesses in the end-to-end tests (``-A tests.e2e_apps...``)."""
