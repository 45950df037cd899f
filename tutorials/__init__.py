"""Tutorials: scripts to read and run (``python tutorials/<name>.py``; ``--quick`` for a
seconds-long version, which the test suite runs)."""
