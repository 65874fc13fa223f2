"""A shard's records, one work unit at a time, read within the run's bounds.

Units. A shard of S bytes is read as n = ceil(S / unit_bytes) units, so that no shard is one
worker's straggler. Chunk k of a shard is always rows [k * chunk_size, (k + 1) * chunk_size);
each chunk belongs to exactly one unit, the one whose byte range holds the chunk's first
record: unit u owns byte offsets [u * D, (u + 1) * D), the last one everything after. Offsets
are positions in the decompressed stream for JSON lines (D = unit_bytes times the compression
ratio of the shard's first 4 MiB, the same for every unit of a shard) and the first page of a
row group for Parquet (D = unit_bytes). So a unit needs nothing from the plan but (shard, size,
u, n), and every run with the same unit_bytes splits a shard the same way.

A unit of a compressed shard decompresses (without parsing) everything before its range: for
unit u that is u / n of the shard, a cost that only shards above unit_bytes pay, and a small one
beside scoring (docs/operations.md counts it). Parquet units seek to their row groups.

Faults (pipeline/faults.py). What the storage raises comes out as StorageFault (a machine
fault, after retries); anything a decoder raises reading the bytes is the shard's: the chunk
where reading stopped gets one `truncated_shard` record, a shard that cannot be opened one
`unreadable_shard` record (row null), and a record over max_record_bytes becomes
`record_too_large` unread past the bound.
"""
from __future__ import annotations

import bisect
import dataclasses
import gzip
import io as _io
import math
from typing import Iterator

from pipeline import io
from pipeline.faults import (TRUNCATED_SHARD, UNREADABLE_SHARD, UNSUPPORTED_FORMAT, RecordFault,
                             StorageFault)
from pipeline.records import RAW_LIMIT, Rejected, TooLarge

JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED = JSON_SUFFIXES + PARQUET_SUFFIXES
RATIO_SAMPLE_BYTES = 4 << 20
READ_BUFFER = 1 << 20
PARQUET_BATCH_ROWS = 1024


@dataclasses.dataclass(frozen=True)
class Unit:
  source: str  # the shard's path or URL, as matched
  size: int  # its size in bytes, as matched
  index: int  # which unit of the shard, 0 .. count - 1
  count: int  # units the shard is read as
  done: frozenset = frozenset()  # chunks to read past: finished by an earlier run (pipeline.state)
  identity: str = ""  # the shard as matched (size, store version): recorded with its outputs


@dataclasses.dataclass
class RawChunk:
  index: int
  rows: list  # (row, JSON line bytes | Parquet row dict | TooLarge), unless done
  broken: Rejected | None = None  # where the shard broke off inside this chunk, if it did
  done: bool = False  # finished by an earlier run: read past, not collected


def units_of(size: int, unit_bytes: int) -> int:
  return max(1, math.ceil(size / unit_bytes))


def supported(source: str) -> bool:
  return source.endswith(SUPPORTED)


def read_unit(unit: Unit, chunk_size: int, unit_bytes: int, max_record_bytes: int) -> Iterator[RawChunk]:
  """The chunks `unit` owns, in order."""
  if not supported(unit.source):
    if unit.index == 0:
      yield _shard_error(unit, RecordFault(UNSUPPORTED_FORMAT, f"expected one of {', '.join(SUPPORTED)}"))
    return
  reader = _read_parquet if unit.source.endswith(PARQUET_SUFFIXES) else _read_json_lines
  yield from reader(unit, chunk_size, unit_bytes, max_record_bytes)


def iter_records(source: str, max_record_bytes: int) -> Iterator[tuple[int | None, object]]:
  """(row, item) for every record of a whole shard, as one unit: items are JSON line bytes,
  Parquet row dicts, TooLarge, or a Rejected for where the shard broke off (row None: it could
  not be read at all). For readers that take whole shards (training, rethreshold)."""
  whole = Unit(source, 0, 0, 1)
  for chunk in read_unit(whole, 1 << 62, 1 << 62, max_record_bytes):
    yield from chunk.rows
    if chunk.broken:
      yield chunk.broken.row, chunk.broken


def _shard_error(unit: Unit, fault: RecordFault) -> RawChunk:
  """The whole shard's one errors/ row (row null), in its first chunk."""
  return RawChunk(0, [], broken=Rejected.of(fault, unit.source, None))


def _unreadable(err: BaseException) -> RecordFault:
  return RecordFault(UNREADABLE_SHARD, f"{type(err).__name__}: {err}")


def _truncated(err: BaseException, row: int) -> RecordFault:
  return RecordFault(TRUNCATED_SHARD, f"{type(err).__name__}: {err} (after {row} records)")


class _Owner:
  """Which unit owns the chunk whose first record starts at a byte offset."""

  def __init__(self, unit: Unit, span: float):
    self.unit, self.span = unit, span

  def of(self, offset: int) -> int:
    return min(self.unit.count - 1, int(offset // self.span))


# ------------------------------------------------------------------------------- JSON lines

def _decompressed(raw, source: str):
  buffered = _io.BufferedReader(raw, READ_BUFFER)
  if source.endswith(".gz"):
    return gzip.GzipFile(fileobj=buffered, mode="rb")
  if source.endswith(".zst"):
    import zstandard
    reader = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
    return _io.BufferedReader(reader, READ_BUFFER)  # zstandard's reader has no readline
  return buffered


class _Prefix(_io.RawIOBase):
  """The first `limit` bytes of a file, then end of file."""

  def __init__(self, raw, limit: int):
    self._raw, self._left = raw, limit

  def readable(self) -> bool:
    return True

  def readinto(self, buffer) -> int:
    if self._left <= 0:
      return 0
    view = memoryview(buffer)[:min(len(buffer), self._left)]
    n = self._raw.readinto(view)
    self._left -= n
    return n


def compression_ratio(source: str) -> float:
  """Decompressed bytes per stored byte over the shard's first RATIO_SAMPLE_BYTES: what turns
  unit_bytes into a range of the decompressed stream. The same for every unit of a shard."""
  if not source.endswith((".gz", ".zst")):
    return 1.0
  out = 0
  with io.RetryingFile(source) as raw:
    stream = _decompressed(_Prefix(raw, RATIO_SAMPLE_BYTES), source)
    try:
      while block := stream.read(READ_BUFFER):
        out += len(block)
    except StorageFault:
      raise
    except Exception:  # the sample ends inside a frame, or the shard is corrupt: what was read counts
      pass
    stored = raw.tell()
  return max(1.0, out / stored) if stored else 1.0


def _lines(stream, max_record_bytes: int) -> Iterator[tuple[int, bytes | TooLarge]]:
  """(decompressed offset, line) for every line; lines over the bound are read past in pieces,
  never held whole."""
  offset, limit = 0, max_record_bytes + 1
  while line := stream.readline(limit):
    start = offset
    offset += len(line)
    if len(line) == limit and not line.endswith(b"\n"):
      head = line[:RAW_LIMIT * 4]
      del line
      while more := stream.readline(READ_BUFFER):
        offset += len(more)
        if more.endswith(b"\n"):
          break
      yield start, TooLarge(head, offset - start)
    else:
      yield start, line


def _read_json_lines(unit: Unit, chunk_size: int, unit_bytes: int, max_record_bytes: int):
  span = unit_bytes * compression_ratio(unit.source) if unit.count > 1 else math.inf
  owner = _Owner(unit, span)
  chunk, mine, row, position = None, False, 0, 0  # position: where the next line starts
  try:
    with io.RetryingFile(unit.source) as raw:
      stream = _decompressed(raw, unit.source)
      for offset, line in _lines(stream, max_record_bytes):
        position = offset + (line.size if isinstance(line, TooLarge) else len(line))
        if row % chunk_size == 0:  # a chunk starts: whose is it?
          if chunk is not None and mine:
            yield chunk
          index, holder = row // chunk_size, owner.of(offset)
          if holder > unit.index:
            return
          mine = holder == unit.index
          chunk = RawChunk(index, [], done=index in unit.done)
        if mine and not chunk.done:
          chunk.rows.append((row, line))
        row += 1
  except StorageFault:
    raise
  except FileNotFoundError as err:
    if unit.index == 0:
      yield _shard_error(unit, RecordFault(UNREADABLE_SHARD, f"not found: {err}"))
    return
  except Exception as err:  # the bytes: a truncated gzip, a corrupt zstd frame, a bad header
    yield from _broken(unit, owner, chunk, mine, row, position, chunk_size, err)
    return
  if chunk is not None and mine:
    yield chunk


def _broken(unit, owner, chunk, mine, row, offset, chunk_size, err):
  """The chunk where reading stopped gets one record saying so, if this unit owns it."""
  if row == 0:
    if unit.index == 0:
      yield _shard_error(unit, _unreadable(err))
    return
  broken = Rejected.of(_truncated(err, row), unit.source, row)
  if row % chunk_size:  # inside a chunk that has begun: its owner is known
    if mine:
      chunk.broken = broken
      yield chunk
    return
  if mine:
    yield chunk
  if owner.of(offset) == unit.index:
    yield RawChunk(row // chunk_size, [], broken=broken,
                   done=row // chunk_size in unit.done)


# ---------------------------------------------------------------------------------- Parquet

def _read_parquet(unit: Unit, chunk_size: int, unit_bytes: int, max_record_bytes: int):
  import pyarrow.parquet as pq
  raw = io.RetryingFile(unit.source)
  with raw:
    try:
      parquet = pq.ParquetFile(_io.BufferedReader(raw, READ_BUFFER))
    except StorageFault:
      raise
    except Exception as err:  # not found, not Parquet, a corrupt footer
      if unit.index == 0:
        yield _shard_error(unit, _unreadable(err))
      return
    metadata = parquet.metadata
    starts = [0]  # first row of each row group, and the total
    for g in range(metadata.num_row_groups):
      starts.append(starts[-1] + metadata.row_group(g).num_rows)
    owner = _Owner(unit, unit_bytes if unit.count > 1 else math.inf)
    holder = [owner.of(_first_page(metadata.row_group(g))) for g in range(metadata.num_row_groups)]
    group_of = lambda row: bisect.bisect_right(starts, row) - 1
    owned = [c for c in range(math.ceil(starts[-1] / chunk_size))
             if holder[group_of(c * chunk_size)] == unit.index]
    todo = [c for c in owned if c not in unit.done]
    rows = _parquet_rows(parquet, starts, todo, chunk_size, max_record_bytes)
    for c in owned:
      if c in unit.done:
        yield RawChunk(c, [], done=True)
        continue
      chunk = RawChunk(c, [])
      try:
        for row, item in rows:
          chunk.rows.append((row, item))
          if row + 1 == min(starts[-1], (c + 1) * chunk_size):
            break
      except StorageFault:
        raise
      except Exception as err:  # a corrupt page or row group
        row = chunk.rows[-1][0] + 1 if chunk.rows else c * chunk_size
        chunk.broken = Rejected.of(_truncated(err, row), unit.source, row)
        yield chunk
        return
      yield chunk


def _parquet_rows(parquet, starts, chunks, chunk_size, max_record_bytes):
  """(row, item) for the rows of `chunks` (sorted), decoding only the row groups that hold them
  and turning into Python objects only the rows wanted."""
  wanted = [(c * chunk_size, min(starts[-1], (c + 1) * chunk_size)) for c in chunks]
  if not wanted:
    return
  groups = sorted({g for lo, hi in wanted
                   for g in range(bisect.bisect_right(starts, lo) - 1, bisect.bisect_right(starts, hi - 1))})
  spans = iter(wanted)
  lo, hi = next(spans)
  for g in groups:
    row = starts[g]
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=[g]):
      end = row + batch.num_rows
      while lo < end:
        first = max(lo, row)
        last = min(hi, end)
        for offset, item in enumerate(batch.slice(first - row, last - first).to_pylist()):
          yield first + offset, _bounded(item, max_record_bytes)
        if last < hi:
          break
        nxt = next(spans, None)
        if nxt is None:
          return
        lo, hi = nxt
      row = end


def _first_page(group) -> int:
  column = group.column(0)
  offsets = [column.data_page_offset]
  if column.has_dictionary_page and column.dictionary_page_offset:
    offsets.append(column.dictionary_page_offset)
  return min(offsets)


def _bounded(item: dict, max_record_bytes: int):
  """A Parquet row over the bound (counted by its strings and bytes) becomes TooLarge."""
  size = sum(len(v) * (4 if isinstance(v, str) else 1) for v in item.values() if isinstance(v, (str, bytes)))
  if size <= max_record_bytes:
    return item
  size = sum(len(v.encode("utf-8", "surrogatepass")) if isinstance(v, str) else len(v)
             for v in item.values() if isinstance(v, (str, bytes)))
  if size <= max_record_bytes:
    return item
  head = repr({k: (v[:200] if isinstance(v, (str, bytes)) else v) for k, v in item.items()})
  return TooLarge(head.encode("utf-8", "backslashreplace")[:RAW_LIMIT], size)
