"""Helpers shared by the tests (imported as ``helpers.<module>``; fixtures stay in conftest.py)."""
