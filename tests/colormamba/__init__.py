"""Unit tests of the colormamba library: test_X.py for colormamba/X.py, a folder per subpackage."""
