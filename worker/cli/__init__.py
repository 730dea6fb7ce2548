"""``npay-billing``, the operator's command line: one module per command group.

``main`` (the console script ``npay-billing``) is the root group in :mod:`worker.cli.main`;
``output`` formats tables and JSON, ``support`` holds the shared environment and lookups,
``views`` the row-to-dict and row-to-table shapes.
"""

from worker.cli.main import main

__all__ = ["main"]
