"""pipeline/faults.py: the one mapping of faults to errors/ reasons and exit statuses."""
from __future__ import annotations

import os
import re

import pytest

from pipeline import faults
from pipeline.records import Rejected, parse
from tests.pipeline.conftest import REPO


def test_exit_statuses_by_type_never_by_text():
  assert faults.exit_code(faults.NoInput("x")) == faults.EXIT_USAGE == 2
  assert faults.exit_code(ValueError("--threshold must be within 0..5")) == 2
  assert faults.exit_code(FileNotFoundError("--model /nope: no such directory")) == 2
  for machine in (faults.StorageFault, faults.DeviceFault, faults.EndpointFault):
    assert faults.exit_code(machine("the input matches no file")) == faults.EXIT_FAILED == 1
  assert faults.exit_code(RuntimeError("the input matches no file")) == 1  # the text decides nothing
  assert faults.exit_code(faults.RecordFault(faults.INVALID_JSON, "escaped")) == 1  # a bug if it escapes


def test_record_codes_are_the_contracts():
  with open(os.path.join(REPO, "docs", "contracts.md"), encoding="utf-8") as f:
    text = f.read()
  listed = re.search(r"Codes: (.*?)\.\n", text, re.S).group(1)
  assert set(re.findall(r"`(\w+)`", listed)) == faults.RECORD_CODES
  with pytest.raises(ValueError, match="not a record fault's code"):
    faults.RecordFault("blank_line", "a code no contract lists")


def test_a_record_fault_becomes_one_errors_row_with_its_code():
  rejected = parse("s.jsonl", 7, b'{"text": 3}\n', "text", "id")
  assert isinstance(rejected, Rejected) and rejected.code == faults.NON_STRING_TEXT
  assert rejected.reason == "non_string_text: 'text' is a int" and rejected.raw == '{"text": 3}'
