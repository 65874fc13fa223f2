"""What flows through the pipeline: documents to score, and rejected records (errors/ rows)."""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from pipeline.faults import (EMPTY_LINE, INVALID_JSON, INVALID_UNICODE, MISSING_TEXT, NON_STRING_TEXT,
                             NOT_AN_OBJECT, NULL_TEXT, RECORD_TOO_LARGE, TOO_DEEP, UNDECODABLE_BYTES,
                             RecordFault)

RAW_LIMIT = 10_000  # characters of a rejected record kept in errors/
# JSON nested deeper than this is refused before parsing: Python's parser recurses per level
# and would raise RecursionError (or exhaust the stack) on a line of 100,000 brackets. Web
# records nest a few levels.
MAX_JSON_DEPTH = 64
# JSON may escape a lone UTF-16 surrogate ("\ud800"): valid JSON, but no UTF-8 string can hold it,
# so neither the tokenizer nor Parquet can. Only lines with such an escape are checked in full.
_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


@dataclasses.dataclass(frozen=True)
class Document:
  source: str  # the shard's path as the glob matched it
  row: int  # 0-based position in the shard
  id: str
  text: str


@dataclasses.dataclass(frozen=True)
class TooLarge:
  """A record over --max_record_bytes, read past: its first bytes (for errors/ raw) and size."""
  head: bytes
  size: int


@dataclasses.dataclass(frozen=True)
class Rejected:
  """A record fault where it was found: one errors/ row."""
  source: str
  row: int | None  # None when the whole shard could not be read
  code: str  # one of pipeline.faults.RECORD_CODES: what stats count
  detail: str
  raw: str

  @classmethod
  def of(cls, fault: RecordFault, source: str, row: int | None, raw: str = "") -> Rejected:
    return cls(source, row, fault.code, fault.detail, raw)

  @property
  def reason(self) -> str:
    return f"{self.code}: {self.detail}"

  def to_json(self) -> str:
    return json.dumps({"source": self.source, "row": self.row, "reason": self.reason,
                       "raw": self.raw[:RAW_LIMIT]}, ensure_ascii=False)


def _raw(value: Any) -> str:
  if isinstance(value, bytes):
    return value[:4 * RAW_LIMIT].decode("utf-8", errors="backslashreplace").rstrip("\r\n")
  if isinstance(value, str):
    return value[:RAW_LIMIT]
  try:
    return json.dumps(value, ensure_ascii=False, default=str)[:RAW_LIMIT]
  except (TypeError, ValueError, RecursionError):
    return repr(value)[:RAW_LIMIT]


def json_depth_exceeds(line: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
  """Whether brackets outside strings nest deeper than `limit`. Counting brackets is a C-speed
  bound: only a line with more than `limit` of them is scanned."""
  if line.count(b"[") + line.count(b"{") <= limit:
    return False
  depth, in_string, escaped = 0, False, False
  for byte in line:
    if in_string:
      if escaped:
        escaped = False
      elif byte == 0x5C:  # backslash
        escaped = True
      elif byte == 0x22:  # quote
        in_string = False
    elif byte == 0x22:
      in_string = True
    elif byte in (0x5B, 0x7B):
      depth += 1
      if depth > limit:
        return True
    elif byte in (0x5D, 0x7D):
      depth -= 1
  return False


def parse(source: str, row: int, item, text_field: str, id_field: str) -> Document | Rejected:
  """One record (a JSON line as bytes, a Parquet row as a dict, or a record read past as too
  large) to a Document, or why not."""
  try:
    record = decode(item, text_field)
  except RecordFault as fault:
    return rejected(fault, source, row, item)
  doc_id = record.get(id_field)
  doc_id = f"{source}:{row}" if doc_id is None or doc_id == "" else str(doc_id)
  return Document(source, row, doc_id, record[text_field])


def rejected(fault: RecordFault, source: str, row: int, item) -> Rejected:
  """The errors/ row of a fault found in `item` (as `decode` takes it)."""
  head = item.head if isinstance(item, TooLarge) else item
  return Rejected.of(fault, source, row, _raw(head)[:RAW_LIMIT])


def decode(item, text_field: str) -> dict:
  """One record as a dict whose `text_field` is a string, or RecordFault: what scoring and
  training (train/data.py, which then reads the label) both accept."""
  if isinstance(item, TooLarge):
    raise RecordFault(RECORD_TOO_LARGE, f"{item.size:,} bytes, over --max_record_bytes")
  record = item
  if isinstance(item, bytes):
    try:
      line = item.decode("utf-8")
    except UnicodeDecodeError as err:
      raise RecordFault(UNDECODABLE_BYTES, f"not UTF-8 at byte {err.start}") from None
    if not line.strip():
      raise RecordFault(EMPTY_LINE, "a blank line where a JSON object was expected")
    if json_depth_exceeds(item):
      raise RecordFault(TOO_DEEP, f"JSON nested more than {MAX_JSON_DEPTH} levels")
    try:
      record = json.loads(line)
    except json.JSONDecodeError as err:
      raise RecordFault(INVALID_JSON, f"{err.msg} at column {err.colno}") from None
    except RecursionError:  # a bound the scan above did not see (it should not happen)
      raise RecordFault(TOO_DEEP, "JSON nested too deeply to parse") from None
    if _SURROGATE_ESCAPE.search(item):
      try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
      except UnicodeEncodeError as err:
        raise RecordFault(INVALID_UNICODE, f"a lone surrogate {err.object[err.start]!r} escaped in the JSON") from None
  if not isinstance(record, dict):
    raise RecordFault(NOT_AN_OBJECT, f"a JSON {type(record).__name__}, not an object")
  if text_field not in record:
    raise RecordFault(MISSING_TEXT, f"no {text_field!r} field")
  text = record[text_field]
  if text is None:
    raise RecordFault(NULL_TEXT, f"{text_field!r} is null")
  if not isinstance(text, str):
    raise RecordFault(NON_STRING_TEXT, f"{text_field!r} is a {type(text).__name__}")
  return record
