"""What flows through the pipeline: documents to score, scored documents, rejected records."""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

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
class Scored:
  source: str
  row: int
  id: str
  score: float
  int_score: int
  num_tokens: int
  truncated: bool


@dataclasses.dataclass(frozen=True)
class TooLarge:
  """A record over --max_record_bytes, read past: its first bytes (for errors/ raw) and size."""
  head: bytes
  size: int


@dataclasses.dataclass
class Chunk:
  """Up to `chunk_size` consecutive records of one shard: the unit that is scored, written and
  resumed. Chunk k always covers rows [k * chunk_size, (k + 1) * chunk_size)."""
  source: str
  index: int
  documents: list[Document]
  rejected: list[Rejected]
  originals: dict[int, Any]  # row -> the record as read (line bytes or Parquet row), for edu/


@dataclasses.dataclass(frozen=True)
class Rejected:
  source: str
  row: int | None  # None when the whole shard could not be read
  reason: str  # "<code>: <detail>"; the code is what stats count
  raw: str

  @property
  def code(self) -> str:
    return self.reason.split(":", 1)[0]

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
  if isinstance(item, TooLarge):
    return Rejected(source, row, f"record_too_large: {item.size:,} bytes, over --max_record_bytes",
                    _raw(item.head)[:RAW_LIMIT])
  reject = lambda reason: Rejected(source, row, reason, _raw(item)[:RAW_LIMIT])
  record = item
  if isinstance(item, bytes):
    try:
      line = item.decode("utf-8")
    except UnicodeDecodeError as err:
      return reject(f"undecodable_bytes: not UTF-8 at byte {err.start}")
    if not line.strip():
      return reject("empty_line: a blank line where a JSON object was expected")
    if json_depth_exceeds(item):
      return reject(f"too_deep: JSON nested more than {MAX_JSON_DEPTH} levels")
    try:
      record = json.loads(line)
    except json.JSONDecodeError as err:
      return reject(f"invalid_json: {err.msg} at column {err.colno}")
    except RecursionError:  # a bound the scan above did not see (it should not happen)
      return reject("too_deep: JSON nested too deeply to parse")
    if _SURROGATE_ESCAPE.search(item):
      try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
      except UnicodeEncodeError as err:
        return reject(f"invalid_unicode: a lone surrogate {err.object[err.start]!r} escaped in the JSON")
  if not isinstance(record, dict):
    return reject(f"not_an_object: a JSON {type(record).__name__}, not an object")
  if text_field not in record:
    return reject(f"missing_text: no {text_field!r} field")
  text = record[text_field]
  if text is None:
    return reject(f"null_text: {text_field!r} is null")
  if not isinstance(text, str):
    return reject(f"non_string_text: {text_field!r} is a {type(text).__name__}")
  doc_id = record.get(id_field)
  doc_id = f"{source}:{row}" if doc_id is None or doc_id == "" else str(doc_id)
  return Document(source, row, doc_id, text)
