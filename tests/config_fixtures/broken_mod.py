"""A module that fails to import."""

raise RuntimeError("boom at import")
