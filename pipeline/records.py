"""What flows through the pipeline: documents to score, scored documents, rejected records."""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

RAW_LIMIT = 10_000  # characters of a rejected record kept in errors/
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
    return value.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
  if isinstance(value, str):
    return value
  try:
    return json.dumps(value, ensure_ascii=False, default=str)
  except (TypeError, ValueError):
    return repr(value)


def parse(source: str, row: int, item: bytes | dict, text_field: str, id_field: str
          ) -> Document | Rejected:
  """One record (a JSON line as bytes, or a Parquet row as a dict) to a Document, or why not."""
  reject = lambda reason: Rejected(source, row, reason, _raw(item)[:RAW_LIMIT])
  record = item
  if isinstance(item, bytes):
    try:
      line = item.decode("utf-8")
    except UnicodeDecodeError as err:
      return reject(f"undecodable_bytes: not UTF-8 at byte {err.start}")
    if not line.strip():
      return reject("empty_line: a blank line where a JSON object was expected")
    try:
      record = json.loads(line)
    except json.JSONDecodeError as err:
      return reject(f"invalid_json: {err.msg} at column {err.colno}")
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
