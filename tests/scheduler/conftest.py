"""Walk tests bill cycles seconds apart: their merchant allows that (the default is 1 day)."""

import pytest


@pytest.fixture(autouse=True)
def _second_cycles(request):
    """Tests on a database bill 5-second cycles: the merchant allows cycles 1 s apart."""
    if "db" in request.fixturenames:
        request.getfixturevalue("db").sql("UPDATE merchants SET min_cycle_interval = '1s' WHERE id = 1")
