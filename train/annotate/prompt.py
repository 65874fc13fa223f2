"""The question put to the LLM and how its answer is read.

The packaged prompt is FineWeb-Edu's additive 5-point rubric (HuggingFaceFW/fineweb-edu-classifier,
utils/prompt.txt), adapted to Korean web pages: the school levels named as the Korean curriculum
names them, and the noise Korean pages carry (shopping listings, promotional blogs, comment
threads) named where the rubric names advertisements. The user replaces it with --prompt FILE:
any text holding `{text}` once, where the document goes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import re

PLACEHOLDER = "{text}"
DEFAULT = "fineweb_edu_ko.txt"

# A stated score, in the shapes models write it: "Educational score: 3", "**Score:** 4",
# "**Score**: 4", "점수: 2", "교육 점수：5점", "score = 5", "Score: <3>", "Score: 4/5", "Score: 4."
# The number is taken whole, so that "score: 10" or "score: 3.5" is read as a number off the
# 0-5 scale (unreadable), not as its first digit.
SCORE = re.compile(
    r"(?:score|점수)\s*(?:\*\*|__|\*|_)?\s*[:：=]\s*(?:\*\*|__|\*|_)?\s*[\[<(]?\s*(\d+(?:[.,]\d+)?)",
    re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Prompt:
  template: str
  sha256: str  # of the file's bytes: what a rerun must match

  def render(self, text: str, max_chars: int) -> str:
    # str.replace, not format(): a user's prompt may hold braces of its own (JSON examples).
    return self.template.replace(PLACEHOLDER, text[:max_chars], 1)


def load(path: str | None) -> Prompt:
  """The prompt file, or the packaged rubric. UsageError if it has no single {text}."""
  if path is None:
    data = importlib.resources.files("train.annotate").joinpath("prompts", DEFAULT).read_bytes()
  else:
    from pipeline import io
    data = io.read_bytes(path)
  from pipeline.faults import UsageError
  try:
    template = data.decode("utf-8")
  except UnicodeDecodeError as err:
    raise UsageError(f"--prompt {path}: not UTF-8 ({err})") from None
  if template.count(PLACEHOLDER) != 1:
    raise UsageError(f"--prompt {path or DEFAULT}: must hold {PLACEHOLDER} exactly once, where the "
                     f"document goes; it holds it {template.count(PLACEHOLDER)} times")
  return Prompt(template, hashlib.sha256(data).hexdigest())


def parse_score(answer: str | None) -> int | None:
  """The last score an answer states, or None when it states none that can be read."""
  found = SCORE.findall(answer or "")
  if not found or not found[-1].isdigit() or int(found[-1]) > 5:  # the last one decides
    return None
  return int(found[-1])
