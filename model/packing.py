"""Pack tokenized documents into a few fixed (rows, length) shapes.

Padding is paid for in FLOPs, so documents are packed several to a row, each attending only to
itself (segment ids), with RoBERTa positions restarting at every document. Rows come in a few
lengths and batches in a few sizes, so XLA compiles a handful of programs and never again.
"""
from __future__ import annotations

import dataclasses
import heapq

import numpy as np

# A document costs at least `<s>`, one token of the prefix and `</s>`; no row holds more
# documents than it could of those, which bounds the width of the `<s>` index.
MIN_DOCUMENT_TOKENS = 4


def max_documents_per_row(length: int, pack: bool) -> int:
  return max(1, length // MIN_DOCUMENT_TOKENS) if pack else 1


@dataclasses.dataclass
class Batch:
  """One compiled call: arrays for the model and where each document's score comes out."""
  input_ids: np.ndarray  # (rows, length) int32
  segment_ids: np.ndarray  # (rows, length) int32, 0 = padding
  position_ids: np.ndarray  # (rows, length) int32
  cls_index: np.ndarray  # (rows, documents per row) int32: where each document's `<s>` is
  documents: np.ndarray  # indices into the caller's list, one per scored slot
  slots: tuple[np.ndarray, np.ndarray]  # (row, column) of each document in the output
  real_tokens: int

  @property
  def shape(self) -> tuple[int, int]:
    return self.input_ids.shape


def assign_rows(lengths: np.ndarray, row_lengths: tuple[int, ...], pack: bool) -> list[tuple[int, list[int]]]:
  """Documents to rows: [(row length, [document indices])].

  Longest first; each document goes to the row of any length with the most room left that
  fits it (worst-fit decreasing: near-optimal when most documents are short, O(n log n)), else
  opens a row of the shortest length that holds it.
  """
  rows: list[tuple[int, list[int]]] = []
  free: list[tuple[int, int]] = []  # max-heap of (-room, row) over rows that can take more
  for doc in np.argsort(-lengths, kind="stable"):
    n = int(lengths[doc])
    if pack and free and -free[0][0] >= n:
      room, row = heapq.heappop(free)
      rows[row][1].append(int(doc))
      room = -room - n
      if room >= MIN_DOCUMENT_TOKENS and len(rows[row][1]) < max_documents_per_row(rows[row][0], pack):
        heapq.heappush(free, (-room, row))
      continue
    length = next((l for l in row_lengths if l >= n), None)
    if length is None:
      raise ValueError(f"document of {n} tokens is longer than the longest row {row_lengths[-1]}")
    rows.append((length, [int(doc)]))
    # As above: a row whose `<s>` index holds one slot takes no second document, however
    # much room short documents leave in it.
    if pack and length - n >= MIN_DOCUMENT_TOKENS and max_documents_per_row(length, pack) > 1:
      heapq.heappush(free, (-(length - n), len(rows) - 1))
  return rows


def batch_sizes(full: int, multiple: int, smallest_fraction: int) -> list[int]:
  """Compiled batch sizes for one row length, largest first: full, full/2, ... down to
  full/smallest_fraction, each a multiple of the device count."""
  sizes, size = [], full
  while size >= max(multiple, full // smallest_fraction):
    sizes.append(size)
    size //= 2
  sizes = sorted({max(multiple, s - s % multiple) for s in sizes}, reverse=True)
  return sizes


def next_batch_size(sizes: list[int], rows: int) -> int:
  """The size of the next batch for `rows` rows left (sizes largest first): the smallest size
  that holds them all, unless a run of smaller batches, each the largest that they fill, would
  leave fewer rows empty. 20 rows of sizes 32/16/8/4 are 16 + 4, not 32 with 12 rows of
  padding; 30 rows are one 32, not 16 + 8 + 4 + 4 with the same two empty rows."""
  if rows >= sizes[0]:
    return sizes[0]
  fits = next(s for s in reversed(sizes) if s >= rows)
  left = rows
  while left >= sizes[-1]:
    left -= next(s for s in sizes if s <= left)
  empty_if_split = sizes[-1] - left if left else 0
  return fits if fits - rows <= empty_if_split else next(s for s in sizes if s <= rows)


def make_batches(ids: list[np.ndarray], rows: list[tuple[int, list[int]]], sizes: dict[int, list[int]],
                 pad_token_id: int, pack: bool, share_tails: bool = True) -> list[Batch]:
  """Fill compiled shapes with rows, longest rows first, in the sizes `next_batch_size` picks.
  The empty rows of a length's last batch, paid for either way, (share_tails) take rows of
  shorter lengths, the longest first: that may spare a shorter length its own last batch, the
  padding a run of a few hundred documents pays most for."""
  pending = {length: [docs for l, docs in rows if l == length] for length in sizes}
  batches = []
  for length in sorted(sizes, reverse=True):
    left = pending[length]
    while left:
      size = next_batch_size(sizes[length], len(left))
      chunk, left = left[:size], left[size:]
      for shorter in sorted((l for l in sizes if l < length and share_tails), reverse=True):
        room = size - len(chunk)
        chunk, pending[shorter] = chunk + pending[shorter][:room], pending[shorter][room:]
      batches.append(_fill(ids, chunk, size, length, pad_token_id, pack))
  return batches


def _fill(ids, chunk, size, length, pad_token_id, pack) -> Batch:
  width = max_documents_per_row(length, pack)
  input_ids = np.full((size, length), pad_token_id, np.int32)
  segment_ids = np.zeros((size, length), np.int32)
  position_ids = np.full((size, length), pad_token_id, np.int32)
  cls_index = np.zeros((size, width), np.int32)
  documents, slot_rows, slot_cols, real = [], [], [], 0
  for r, docs in enumerate(chunk):
    start = 0
    for k, doc in enumerate(docs):
      n = len(ids[doc])
      input_ids[r, start:start + n] = ids[doc]
      segment_ids[r, start:start + n] = k + 1
      position_ids[r, start:start + n] = np.arange(pad_token_id + 1, pad_token_id + 1 + n)
      cls_index[r, k] = start
      documents.append(doc)
      slot_rows.append(r)
      slot_cols.append(k)
      start += n
    real += start
  return Batch(input_ids, segment_ids, position_ids, cls_index, np.asarray(documents, np.int64),
               (np.asarray(slot_rows), np.asarray(slot_cols)), real)


def compiled_lengths(row_lengths: tuple[int, ...], max_length: int) -> tuple[int, ...]:
  """Row lengths actually compiled: the configured ones up to max_length, and max_length."""
  return tuple(sorted({min(l, max_length) for l in row_lengths} | {max_length}))
