"""Collects the max abs differences the parity tests measure and prints them after the run."""
from __future__ import annotations

import numpy as np
import pytest

_MEASURED: list[tuple[str, str, int, float]] = []


@pytest.fixture
def max_abs_diff(request, record_property):
  """max_abs_diff(label, ours, reference) -> float, recorded (junit property, summary, -s)."""

  def measure(label: str, ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    diff = float(np.max(np.abs(ours - reference)))
    record_property(f"max_abs_diff[{label}]", diff)
    _MEASURED.append((request.node.name, label, ours.size, diff))
    print(f"\n{request.node.name} {label}: {ours.size} values, max abs diff {diff:.3g}")
    return diff

  return measure


def pytest_terminal_summary(terminalreporter):
  if not _MEASURED:
    return
  terminalreporter.section("max abs diff of our scores vs the reference")
  for test, label, n, diff in _MEASURED:
    terminalreporter.write_line(f"{diff:9.2e}  {n:5d} values  {label}  ({test})")
