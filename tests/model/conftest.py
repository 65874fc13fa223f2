"""Collects the max abs differences the parity tests measure and prints them after the run.

They travel in each test's report (user_properties) to tests/conftest.py, which prints them:
the summary stays whole when pytest-xdist runs the tests in worker processes."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def max_abs_diff(request, record_property):
  """max_abs_diff(label, ours, reference) -> float, recorded (junit property, summary, -s)."""

  def measure(label: str, ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    diff = float(np.max(np.abs(ours - reference)))
    record_property(f"max_abs_diff[{label}]", diff)
    record_property("max_abs_diff", [request.node.name, label, int(ours.size), diff])
    print(f"\n{request.node.name} {label}: {ours.size} values, max abs diff {diff:.3g}")
    return diff

  return measure
