"""Whose fault it is: the one taxonomy of what goes wrong, for scoring, training and annotation.

  Fault                   anything koedu raises on purpose
    RecordFault           the record's (or its shard's bytes'): errors/ gets a row with its
                          reason, `<code>: <detail>`; the run goes on
    MachineFault          the machine's: retried where it happens, then fails the run (exit 1);
                          never in errors/, and a rerun does the work
      StorageFault        storage (timeout, reset, 5xx, throttling, full disk) after its retries
      DeviceFault         the devices (runtime error, halted chip, out of memory) after theirs
      EndpointFault       a service called over the network (429, 5xx, timeout) after its own
    UsageError            the user's to fix (a setting, the model, the output directory, an
                          input that matches nothing): exit 2, and retrying would not help
      NoInput             the input matched no shard

Use: raise `RecordFault(INVALID_JSON, "...")` where a record is found wanting and turn it into
an errors/ row (pipeline.records.Rejected.of) where the record's place is known; raise a
MachineFault subclass once retries are spent (PERMANENT says which exceptions are not worth
a retry); raise UsageError (or a subclass: a step adds its
own, e.g. an endpoint that refuses the API key) for what the user must change. An entry point
ends with `exit_code(err)`. Nothing reads an exception's text to tell faults apart: the type
decides. One exception: a remote runner's job fails as one exception of its own whose text holds
the workers' tracebacks, and there the type is read from the text (`_raised_remotely`). Record codes are the constants below (docs/contracts.md lists them); a step that finds
a new kind of record fault adds its code here.
"""
from __future__ import annotations

import re
import sys

# Exit statuses of every koedu command (docs/contracts.md).
EXIT_OK = 0
EXIT_FAILED = 1  # a machine fault, or a bug: rerun to finish
EXIT_USAGE = 2  # a usage or settings error, found before anything ran (or no shard matched)

# Record faults: the code of an errors/ row's reason. What a line's bytes hold:
INVALID_JSON = "invalid_json"
TOO_DEEP = "too_deep"
RECORD_TOO_LARGE = "record_too_large"
EMPTY_LINE = "empty_line"
NOT_AN_OBJECT = "not_an_object"
MISSING_TEXT = "missing_text"
NULL_TEXT = "null_text"
NON_STRING_TEXT = "non_string_text"
UNDECODABLE_BYTES = "undecodable_bytes"
INVALID_UNICODE = "invalid_unicode"
TOKENIZER_FAILED = "tokenizer_failed"
# What a shard's bytes hold (row null when the shard could not be read at all):
UNREADABLE_SHARD = "unreadable_shard"
UNSUPPORTED_FORMAT = "unsupported_format"
TRUNCATED_SHARD = "truncated_shard"
# What a training record's label holds (train/data.py's bad_rows.jsonl):
MISSING_LABEL = "missing_label"
LABEL_NOT_A_NUMBER = "label_not_a_number"
LABEL_NOT_FINITE = "label_not_finite"
LABEL_OUT_OF_RANGE = "label_out_of_range"
RECORD_CODES = frozenset({
    INVALID_JSON, TOO_DEEP, RECORD_TOO_LARGE, EMPTY_LINE, NOT_AN_OBJECT, MISSING_TEXT, NULL_TEXT,
    NON_STRING_TEXT, UNDECODABLE_BYTES, INVALID_UNICODE, TOKENIZER_FAILED, UNREADABLE_SHARD,
    UNSUPPORTED_FORMAT, TRUNCATED_SHARD, MISSING_LABEL, LABEL_NOT_A_NUMBER, LABEL_NOT_FINITE,
    LABEL_OUT_OF_RANGE})

# What retrying cannot mend (the path, the permissions, or a bug): raised as they are, where any
# other exception of storage or an endpoint is taken for a blip and retried.
PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
             FileExistsError, ValueError, TypeError, KeyError, AttributeError, NotImplementedError)


class Fault(Exception):
  """Anything koedu raises on purpose."""


class RecordFault(Fault):
  """A record's own fault: it goes to errors/ as `<code>: <detail>` and never stops a run."""

  def __init__(self, code: str, detail: str):
    if code not in RECORD_CODES:
      raise ValueError(f"{code!r} is not a record fault's code (pipeline/faults.py lists them)")
    super().__init__(f"{code}: {detail}")
    self.code, self.detail = code, detail

  @property
  def reason(self) -> str:
    return f"{self.code}: {self.detail}"


class MachineFault(Fault):
  """The machine's fault, after its retries: the run fails (exit 1), a rerun does the work."""


class StorageFault(MachineFault):
  """Storage failed after every retry."""


class DeviceFault(MachineFault):
  """The devices failed and did not recover within the retries."""


class EndpointFault(MachineFault):
  """A service called over the network (an LLM endpoint: 429, 5xx, a timeout, a dropped
  connection) still failing after the retries and their backoff."""


class UsageError(Fault, ValueError):
  """The user's to fix before a rerun can help: exit 2. A ValueError, as Python's own are."""


class NoInput(UsageError):
  """The input (globs or manifest) matched no shard."""


def exit_code(err: BaseException) -> int:
  """A command's exit status for the exception that ended it: EXIT_USAGE for the user's to fix
  (UsageError, and the ValueError or FileNotFoundError a setting or path of theirs raises at
  start: a config's check, a model directory that is not there), EXIT_FAILED for the rest."""
  if isinstance(err, MachineFault):
    return EXIT_FAILED
  if isinstance(err, (UsageError, ValueError, FileNotFoundError)) or _model_unavailable(err):
    return EXIT_USAGE
  remote = _raised_remotely(err)
  if remote and all(issubclass(t, UsageError) for t in remote):
    return EXIT_USAGE
  return EXIT_FAILED


# The last line of a worker's traceback: "pipeline.state.settings.OutputMismatch: <message>".
_KOEDU_EXCEPTION_LINE = re.compile(r"^((?:pipeline|model|train)(?:\.\w+)+): ", re.M)


def _raised_remotely(err: BaseException) -> list[type]:
  """koedu's exception types named in the text of a job that failed on remote workers. Dataflow
  fails `wait_until_finish` with a DataflowRuntimeException whose text is the worker's
  traceback (`traceback.format_exc()`, "Error message from worker: ..."); a usage error raised
  on a worker (the output scored at another precision, a shard rewritten since it was planned)
  must still exit 2, so that a scheduler does not retry what cannot succeed. Only types of
  modules this process has loaded count (the text names modules, it does not import them)."""
  found = []
  for name in _KOEDU_EXCEPTION_LINE.findall(str(err)):
    module, _, qualname = name.rpartition(".")
    kind = getattr(sys.modules.get(module), qualname, None)
    if isinstance(kind, type) and issubclass(kind, Fault) and kind not in found:
      found.append(kind)
  return found


def _model_unavailable(err: BaseException) -> bool:
  # A --model that cannot be fetched at start is the user's (the message names --model PATH).
  # model/ sits below pipeline/, so its exception cannot derive from UsageError; and importing
  # model.hub loads JAX, which this module must not. Only model.hub raises it: if model.hub was
  # never imported, `err` is not one.
  hub = sys.modules.get("model.hub")
  return hub is not None and isinstance(err, hub.ModelUnavailable)
