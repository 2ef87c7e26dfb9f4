"""Importable targets for the config loader tests (``source:`` points here)."""
