"""Hypothesis profiles for the property-based suite.

* ``ci`` (the default, what ``make test`` runs): a bounded, derandomized number of examples per
  property (the same examples on every run, so a failure reproduces and an ``xfail`` is
  deterministic), no example database, no shrinking (a failure is reported as drawn, at once);
* ``dev`` (``HYPOTHESIS_PROFILE=dev``): the same examples, and a failure is shrunk to a minimal
  scenario (can take minutes);
* ``soak`` (``make soak`` or ``HYPOTHESIS_PROFILE=soak``): hundreds of random examples per
  property, no deadline, failures kept in ``.hypothesis/`` and replayed first next time.

``HYPOTHESIS_MAX_EXAMPLES=n`` overrides the number of examples of either profile.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, Phase, settings

CI_EXAMPLES = 30
SOAK_EXAMPLES = 300
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


def _examples(default: int) -> int:
    value = os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "").strip()
    return int(value) if value else default


NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]

settings.register_profile(
    "ci", max_examples=_examples(CI_EXAMPLES), derandomize=True, database=None,
    deadline=timedelta(seconds=30), suppress_health_check=SLOW_OK, print_blob=True, phases=NO_SHRINK)
# ci's examples, shrunk to a minimal one when a property fails (slow: minutes per failure)
settings.register_profile(
    "dev", max_examples=_examples(CI_EXAMPLES), derandomize=True, database=None, deadline=None,
    suppress_health_check=SLOW_OK, print_blob=True)
settings.register_profile(
    "soak", max_examples=_examples(SOAK_EXAMPLES), deadline=None, suppress_health_check=SLOW_OK,
    print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# What the property tests' examples exercised, by family (printed at the end of the run).
COVERAGE: defaultdict[str, Counter[str]] = defaultdict(Counter)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not COVERAGE:
        return
    terminalreporter.section("property examples (tests/property)")
    for family, seen in COVERAGE.items():
        terminalreporter.write_line(f"{family}: {seen['examples']} examples")
        for name, count in sorted(seen.items(), key=lambda item: -item[1]):
            if name != "examples":
                terminalreporter.write_line(f"    {count:5d}  {name}")
