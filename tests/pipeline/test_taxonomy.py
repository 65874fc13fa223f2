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


def test_a_usage_error_raised_on_a_remote_worker_still_exits_2():
  """A Dataflow job fails as one DataflowRuntimeException holding the worker's traceback; a
  usage error raised on a worker must still end the launcher with 2 (not retried by a
  scheduler), a machine fault or a bug with 1."""
  import traceback

  from apache_beam.runners.dataflow.dataflow_runner import DataflowRuntimeException

  from pipeline import state

  def on_worker(exc: Exception) -> str:
    try:
      raise exc
    except Exception:
      return traceback.format_exc()  # what Beam's SDK worker reports

  def failed_job(*raised) -> DataflowRuntimeException:
    # The message DataflowPipelineResult.wait_until_finish raises with (Beam 2.77).
    errors = "\n".join(f"Error message from worker: {on_worker(e)}" for e in raised)
    return DataflowRuntimeException(f"Dataflow pipeline failed. State: FAILED, Error:\n{errors}", None)

  mismatch = state.OutputMismatch("gs://b/out was scored at float32, not bfloat16 [while running 'Score']")
  assert faults.exit_code(failed_job(mismatch)) == faults.EXIT_USAGE
  assert faults.exit_code(failed_job(faults.UsageError("the tokenizer has 9 tokens"))) == faults.EXIT_USAGE
  assert faults.exit_code(failed_job(faults.DeviceFault("a batch failed 9 times"))) == faults.EXIT_FAILED
  assert faults.exit_code(failed_job(mismatch, faults.StorageFault("503"))) == faults.EXIT_FAILED
  assert faults.exit_code(failed_job(KeyError("a bug on a worker"))) == faults.EXIT_FAILED
  # Only koedu's own types, and only those of modules loaded here: the text imports nothing.
  assert faults.exit_code(RuntimeError("pipeline.nowhere.Refused: x")) == faults.EXIT_FAILED
