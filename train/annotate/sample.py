"""Which documents are annotated: the N rows with the smallest hash of (seed, source, row).

A row's hash does not depend on N, on the other shards or on the order they are read in, so the
same input, N and seed give the same documents, and a larger N holds every document of a
smaller one (the N + k smallest include the N smallest). Rows are hashed, not documents: a
sampled row the reader rejects (broken JSON, no text field, over --max_record_bytes) is a
sampled document that lands in errors/ with the scoring pipeline's reason, so the sample does
not lean towards well-formed records and nothing is dropped unseen.

Two passes over the shards, both with the scoring pipeline's reader and bounds:
- draw(): every row's hash, keeping the N smallest of each shard in a bounded heap (memory N
  keys per shard read at once, never a text), the shards' heaps merged into the N smallest. JSON
  lines are only split into lines here, never parsed.
- documents(): the texts of the sampled rows still to do, one shard at a time, read up to its
  last sampled row. A resumed run reads only the shards that still hold work.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import heapq
from typing import Iterator

from pipeline import faults, io, records, shards
from pipeline.records import Document, Rejected

MAX_RECORD_BYTES = 16 << 20  # as scoring's and training's default: a larger record is a bad row
READ_THREADS = 4  # shards hashed at once: overlaps storage latency (hashing holds the GIL)


def key(seed: int, source: str, row: int) -> int:
  """The row's place in every sample drawn with this seed: 64 bits of BLAKE2b."""
  digest = hashlib.blake2b(f"{seed}\0{source}\0{row}".encode(), digest_size=8).digest()
  return int.from_bytes(digest, "big")


@dataclasses.dataclass
class Sample:
  rows: list[tuple[int, str, int]]  # (key, source, row), the N smallest keys, sorted
  unreadable: list[Rejected]  # shards that could not be read at all (row None): in no sample
  shards: int  # matched
  total_rows: int  # rows the shards hold, the population sampled from

  def by_shard(self, skip: set) -> dict[str, list[int]]:
    """Sampled rows not in `skip` ((source, row) pairs), by shard, in shard and row order."""
    out: dict[str, list[int]] = {}
    for _, source, row in self.rows:
      if (source, row) not in skip:
        out.setdefault(source, []).append(row)
    return {source: sorted(rows) for source, rows in sorted(out.items())}


def expand(patterns) -> list[str]:
  """Every shard the globs match, sorted; a glob that matches nothing is an error."""
  found = set()
  for pattern in patterns:
    matched = [source for source, _ in io.match(pattern)]
    if not matched:
      raise faults.NoInput(f"--input {pattern!r} matches no file")
    found.update(matched)
  return sorted(found)


def _shard_smallest(source: str, n: int, seed: int, max_record_bytes: int):
  """(the n smallest (key, row) of the shard, its rows, the Rejected of an unreadable shard)."""
  heap: list[tuple[int, int]] = []  # (-key, row): a max-heap of the n smallest so far
  rows = 0
  for row, item in shards.iter_records(source, max_record_bytes):
    if row is None:  # the shard could not be opened or decoded at all
      return [], 0, item
    rows += 1
    entry = (-key(seed, source, row), row)
    if len(heap) < n:
      heapq.heappush(heap, entry)
    elif entry > heap[0]:
      heapq.heapreplace(heap, entry)
  return [(-k, row) for k, row in heap], rows, None


def draw(sources: list[str], n: int, seed: int, max_record_bytes: int = MAX_RECORD_BYTES,
         threads: int = READ_THREADS) -> Sample:
  best: list[tuple[int, str, int]] = []  # max-heap by key over (-key, source, row)
  unreadable, total = [], 0
  for source, (smallest, rows, broken) in _windowed(
      lambda s: _shard_smallest(s, n, seed, max_record_bytes), sources, threads):
    total += rows
    if broken is not None:
      unreadable.append(broken)
    for k, row in smallest:  # merged into the n smallest of all shards so far
      entry = (-k, source, row)
      if len(best) < n:
        heapq.heappush(best, entry)
      elif entry > best[0]:
        heapq.heapreplace(best, entry)
  rows = sorted((-k, source, row) for k, source, row in best)
  return Sample(rows, unreadable, len(sources), total)


def _windowed(fn, items: list, threads: int):
  """(item, fn(item)) in order, at most 2 x threads computed ahead: Executor.map would run every
  shard at once and hold each result until the slowest shard before it is done."""
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    ahead = collections.deque()
    for item in items:
      ahead.append((item, pool.submit(fn, item)))
      if len(ahead) >= 2 * threads:
        first, future = ahead.popleft()
        yield first, future.result()
    while ahead:
      first, future = ahead.popleft()
      yield first, future.result()


class ShardChanged(faults.StorageFault):
  """A shard held fewer rows on the second pass than on the first: it changed during the run
  (the storage's doing, not a record's; a rerun samples what is there then)."""


def documents(source: str, rows: list[int], text_field: str, id_field: str,
              max_record_bytes: int = MAX_RECORD_BYTES) -> Iterator[Document | Rejected]:
  """The sampled `rows` (sorted) of one shard, as the scoring pipeline parses them."""
  wanted, last, seen = set(rows), rows[-1], 0
  for row, item in shards.iter_records(source, max_record_bytes):
    if row in wanted:
      seen += 1
      yield item if isinstance(item, Rejected) else records.parse(source, row, item, text_field, id_field)
    if row is not None and row >= last:
      break
  if seen != len(wanted):
    raise ShardChanged(f"{source}: {len(wanted) - seen} sampled rows (up to row {last}) are no "
                       f"longer there; the shard changed while the run read it")
