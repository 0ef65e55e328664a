"""Helpers the tests share (importable as ``support``: pyproject sets pythonpath)."""
