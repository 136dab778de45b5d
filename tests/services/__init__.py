"""Unit tests of the job suite: test_X.py for services/X.py, against real stores and servers."""
