"""`score_histogram.png`: the int_score bars beside the raw-score histogram, drawn with Pillow.

matplotlib drew the same picture in 0.45 s at the end of every run (0.3 s of it importing
matplotlib), the longest step after the last batch; Pillow (which Beam already installs) draws it
in about 0.03 s. Two panels of fixed layout need no more than rectangles, lines and text.
"""
from __future__ import annotations

import io
import math

from PIL import Image, ImageDraw, ImageFont

SIZE = (1000, 350)
TOP, BOTTOM = 35, 290  # the panels' plot area, in pixels from the top
LEFT_PANEL, RIGHT_PANEL = (75, 480), (560, 975)  # plot areas, pixels from the left
KEPT, DROPPED, RAW, LINE = "#4c78a8", "#bab0ac", "#4c78a8", "#e45756"


def png(report: dict, threshold: float) -> bytes:
  counts = [report["int_score_histogram"][str(i)] for i in range(6)]
  edges = report["score_histogram"]["bin_edges"]
  fine = report["score_histogram"]["counts"]
  image = Image.new("RGB", SIZE, "white")
  draw = ImageDraw.Draw(image)
  font, small = ImageFont.load_default(size=13), ImageFont.load_default(size=10)

  # int_score bars, kept ones in colour.
  bars = _Panel(draw, LEFT_PANEL, (-0.6, 5.6), max(counts), font)
  for score, n in enumerate(counts):
    bars.box(score - 0.4, score + 0.4, n, KEPT if score >= threshold else DROPPED)
    bars.text_at(score, n, _count(n), small)
  bars.frame(range(6), f"{report['scored']:,} scored, {report['kept']:,} kept "
             f"(int_score >= {threshold:g})", "int_score")
  label = Image.new("L", (200, 16), 0)
  ImageDraw.Draw(label).text((100, 8), "documents", fill=255, font=font, anchor="mm")
  image.paste((0, 0, 0), (8, (TOP + BOTTOM) // 2 - 100), label.rotate(90, expand=True))

  # Raw scores; int_score >= t exactly when the raw score is at least t - 0.5 (halves round to even).
  raw = _Panel(draw, RIGHT_PANEL, (edges[0] - 0.35, edges[-1] + 0.35), max(fine), font)
  for low, high, n in zip(edges, edges[1:], fine):
    raw.box(low, high, n, RAW)
  raw.dashed(threshold - 0.5, LINE)
  raw.frame(range(math.ceil(edges[0]), math.floor(edges[-1]) + 1), "raw scores",
            "score (raw model output, clipped to -1..6 here)")
  legend = f"int_score {threshold:g} begins"
  right, top = RIGHT_PANEL[1] - 8, TOP + 8
  width = draw.textlength(legend, font=small)
  draw.rectangle((right - width - 44, top, right, top + 20), outline="#cccccc", fill="white")
  for start in (38, 26):
    draw.line((right - width - start, top + 10, right - width - start + 8, top + 10), fill=LINE, width=2)
  draw.text((right - 4, top + 10), legend, fill="black", font=small, anchor="rm")

  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return buffer.getvalue()


class _Panel:
  """One plot area: data coordinates to pixels, bars, ticks and the frame."""

  def __init__(self, draw: ImageDraw.ImageDraw, span: tuple[int, int], x_range, y_max: int, font):
    self.draw, self.span, self.x_range, self.font = draw, span, x_range, font
    self.ticks = _nice_ticks(max(y_max, 1) * 1.08)
    self.y_top = max(max(y_max, 1) * 1.08, self.ticks[-1])

  def x(self, value: float) -> float:
    (left, right), (low, high) = self.span, self.x_range
    return left + (value - low) / (high - low) * (right - left)

  def y(self, value: float) -> float:
    return BOTTOM - value / self.y_top * (BOTTOM - TOP)

  def box(self, x0: float, x1: float, height: float, colour: str) -> None:
    if height > 0:
      self.draw.rectangle((self.x(x0), self.y(height), self.x(x1), BOTTOM), fill=colour)

  def text_at(self, x: float, height: float, text: str, font) -> None:
    self.draw.text((self.x(x), self.y(height) - 2), text, fill="black", font=font, anchor="mb")

  def dashed(self, x: float, colour: str) -> None:
    for top in range(TOP, BOTTOM, 10):
      self.draw.line((self.x(x), top, self.x(x), min(top + 6, BOTTOM)), fill=colour, width=2)

  def frame(self, x_ticks, title: str, x_label: str) -> None:
    left, right = self.span
    for value in x_ticks:
      self.draw.line((self.x(value), BOTTOM, self.x(value), BOTTOM + 4), fill="black")
      self.draw.text((self.x(value), BOTTOM + 6), f"{value:g}", fill="black", font=self.font, anchor="mt")
    for value in self.ticks:
      self.draw.line((left - 4, self.y(value), left, self.y(value)), fill="black")
      self.draw.text((left - 6, self.y(value)), _count(value), fill="black", font=self.font, anchor="rm")
    self.draw.rectangle((left, TOP, right, BOTTOM), outline="black")
    self.draw.text(((left + right) / 2, TOP - 8), title, fill="black", font=self.font, anchor="mb")
    self.draw.text(((left + right) / 2, BOTTOM + 24), x_label, fill="black", font=self.font, anchor="mt")


def _nice_ticks(top: float) -> list[int]:
  """Whole-number ticks from 0 in steps of 1, 2 or 5 times a power of ten, about six of them."""
  magnitude = 10 ** math.floor(math.log10(top / 6)) if top > 6 else 1
  step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= top / 6)
  step = max(1, int(step))
  return list(range(0, int(top) + 1, step))


def _count(n: int) -> str:
  """1,234 up to a million, then 1.2M and 3.4B: a corpus's counts fit beside an axis."""
  for unit, size in (("B", 10**9), ("M", 10**6)):
    if n >= size:
      return f"{n / size:.3g}{unit}"
  return f"{n:,}"
