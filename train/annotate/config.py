"""Settings of one annotation run: which documents, which question, which LLM, how hard to push."""
from __future__ import annotations

import dataclasses

# Settings a rerun into the same output must keep: they decide which documents are sampled or
# what the LLM is asked, so a change would mix two kinds of label in one output. `sample` may
# grow (a larger N holds every document of a smaller one); the rest may change freely.
FIXED = ("input", "seed", "llm", "prompt_sha256", "text_field", "id_field", "max_chars",
         "temperature", "max_tokens")


@dataclasses.dataclass(frozen=True)
class AnnotateConfig:
  input: tuple[str, ...]  # shard globs, any format the scoring pipeline reads
  output: str  # receives annotations/, errors/, stats.json, _run.json
  endpoint: str  # OpenAI-compatible base URL, e.g. http://host:8000/v1; /chat/completions is added
  llm: str  # the "model" field of each request, recorded beside every label
  sample: int  # documents to annotate (the N smallest hashes of seed, source and row)
  seed: int = 0  # changes which documents are sampled, nothing else
  prompt: str | None = None  # prompt file with one {text}; None: the packaged FineWeb-Edu rubric
  text_field: str = "text"  # field holding the document
  id_field: str = "id"  # field holding its id; absent or empty: "<source>:<row>", as in scoring
  # Characters of the document put in the prompt: bounds every request's tokens whatever the
  # corpus holds. 2,000 Korean characters are about 1,000 XLM-R tokens, more than the 512 the
  # classifier reads, so the LLM judges at least what the classifier will see.
  max_chars: int = 2000
  temperature: float = 0.0  # greedy: the same answer for the same document on a rerun
  max_tokens: int = 512  # of an answer; the rubric asks for about 100 words and a score
  concurrency: int = 16  # requests in flight at once: what a shared endpoint sees from this run
  requests_per_minute: float = 0.0  # token-bucket rate limit over every attempt; 0: none
  api_key_env: str = "OPENAI_API_KEY"  # variable holding the API key (never a flag: flags are logged)
  timeout_seconds: float = 300.0  # per request, connect to last byte: an answer under load is slow
  max_retries: int = 8  # attempts after the first, per request, before the run fails
  backoff_seconds: float = 1.0  # first retry's wait; doubles per retry, with jitter
  max_backoff_seconds: float = 60.0  # cap of one wait (a longer Retry-After is still honoured)
  flush_every: int = 256  # answers per written part: what a crash can cost at most
  flush_seconds: float = 10.0  # ... or this long, whichever comes first
  progress_seconds: float = 30.0  # between progress lines

  def __post_init__(self):
    if not self.input:
      raise ValueError("--input: at least one glob")
    if self.sample < 1:
      raise ValueError(f"--sample must be >= 1, got {self.sample}")
    if not self.endpoint.startswith(("http://", "https://")):
      raise ValueError(f"--endpoint must be an http(s) URL, got {self.endpoint!r}")
    if not self.llm:
      raise ValueError("--llm: the model name the endpoint serves")
    for name in ("concurrency", "max_chars", "max_tokens", "flush_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
    for name in ("requests_per_minute", "temperature", "max_retries", "backoff_seconds"):
      if getattr(self, name) < 0:
        raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
    for name in ("timeout_seconds", "max_backoff_seconds", "flush_seconds", "progress_seconds"):
      if getattr(self, name) <= 0:
        raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}")

  @property
  def url(self) -> str:
    return self.endpoint.rstrip("/") + "/chat/completions"
