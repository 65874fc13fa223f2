"""What an option is, and how its declaration becomes argparse arguments and Beam options."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Ref:
  """A value another module owns, as "module:attribute.path"; imported only when needed."""
  path: str

  def resolve(self):
    module, _, attrs = self.path.partition(":")
    value = importlib.import_module(module)
    for attr in attrs.split("."):
      value = getattr(value, attr)
    return value


def resolve(value):
  return value.resolve() if isinstance(value, Ref) else value


@dataclasses.dataclass(frozen=True)
class Template:
  """How an option appears among the Flex Template's parameters."""
  label: str  # the console's name for the parameter
  optional: bool = True  # False: a template launch must give it
  # A regex the console checks a value against; None: one made from the option's type and
  # choices (the launch would fail in pipeline.run otherwise, after a worker started).
  regex: str | None = None


ACTIONS = ("store", "flag", "switch", "positional")


@dataclasses.dataclass(frozen=True)
class Option:
  name: str  # the flag is --name (Beam's snake_case); the argparse dest is name
  help: str  # one help for --help, the template metadata and docs/options.md
  used_by: tuple[str, ...]  # entry points that take it: "pipeline.run", "launch.sh score", ...
  default: Any = None  # a value, or a Ref to the module that owns it
  type: Callable[[str], Any] = str  # parses the command-line text
  choices: tuple | Ref | None = None
  # "store": --name VALUE; "flag": --name alone sets True; "switch": --name / --no_name;
  # "positional": NAME without dashes
  action: str = "store"
  required: bool = False  # argparse refuses the command without it
  env: str | None = None  # a KOEDU_* variable read as the default when set; the flag wins
  group: str | None = None  # options of one group exclude one another
  template: Template | None = None  # a parameter of the scoring Flex Template
  metavar: str | None = None

  def __post_init__(self):
    if self.action not in ACTIONS:
      raise ValueError(f"--{self.name}: action must be one of {ACTIONS}, got {self.action!r}")
    if not self.used_by:
      raise ValueError(f"--{self.name}: used by no entry point")
    if self.action in ("flag", "switch") and self.type is not bool:
      raise ValueError(f"--{self.name}: a {self.action} is a bool")

  @property
  def flag(self) -> str:
    return self.name if self.action == "positional" else f"--{self.name}"

  def default_value(self, environ=None):
    """The default as the entry point sees it: the environment variable when set, else the
    declared default. A variable's text is parsed like the flag's (argparse does that)."""
    environ = os.environ if environ is None else environ
    if self.env and environ.get(self.env, "") != "":
      return environ[self.env]
    return resolve(self.default)

  def shown_default(self) -> str:
    """The default as docs and --help write it."""
    value = resolve(self.default)
    if isinstance(value, tuple):
      value = ",".join(str(v) for v in value)
    text = "" if value is None or value is False else str(value)
    if self.env:
      text = f"${self.env}" + (f", else {text}" if text else "")
    return text


def declared(entry: str) -> list[Option]:
  """The options `entry` takes, in catalog order."""
  from options import catalog
  found = [o for o in catalog.OPTIONS if entry in o.used_by]
  if not found:
    raise KeyError(f"no option is declared for {entry!r} (options/catalog.py)")
  return found


def passes_on(option: Option, entry: str) -> bool:
  """A launcher option that is also an option of the job it starts: the launcher hands the
  text on as typed and leaves unset ones to the job's own defaults."""
  return entry.startswith("launch.sh ") and any(not u.startswith("launch.sh ") for u in option.used_by)


def add_arguments(parser: argparse.ArgumentParser, entry: str, *, beam: bool = False,
                  environ=None) -> argparse.ArgumentParser:
  """Adds every option of `entry` to `parser`. beam=True for a PipelineOptions class: nothing is
  required there (Beam parses every PipelineOptions subclass in any process that imported it,
  and argparse would abort the others), so the config's checks say what is missing."""
  groups: dict[str, Any] = {}
  for o in declared(entry):
    target = parser
    if o.group:
      if o.group not in groups:
        groups[o.group] = parser.add_mutually_exclusive_group()
      target = groups[o.group]
    _add(target, parser, o, entry, beam, environ)
  return parser


def _add(target, parser, o: Option, entry: str, beam: bool, environ) -> None:
  if passes_on(o, entry):  # its default is the job's, resolved there: the launcher imports neither
    target.add_argument(o.flag, dest=o.name, default=None, help=o.help, metavar=o.metavar or o.name.upper())
    return
  help = o.help + (f" (default: {o.shown_default()})" if o.shown_default() else "")
  if o.action == "positional":
    target.add_argument(o.name, type=o.type, help=help, metavar=o.metavar)
    return
  if o.action == "flag":
    target.add_argument(o.flag, dest=o.name, action="store_true", default=bool(o.default_value(environ)),
                        help=help)
    return
  if o.action == "switch":
    group = parser.add_mutually_exclusive_group()  # --name / --no_name in Beam's snake_case
    group.add_argument(o.flag, dest=o.name, action="store_true", help=help)
    group.add_argument(f"--no_{o.name}", dest=o.name, action="store_false")
    parser.set_defaults(**{o.name: resolve(o.default)})
    return
  choices = resolve(o.choices)
  target.add_argument(o.flag, dest=o.name, type=o.type, default=o.default_value(environ),
                      choices=list(choices) if choices is not None else None,
                      required=o.required and not beam, help=help, metavar=o.metavar)


def parser(entry: str, doc: str | None = None, **kwargs) -> argparse.ArgumentParser:
  """An ArgumentParser with every option of `entry`; `doc` (the module's docstring) describes it."""
  p = argparse.ArgumentParser(prog=kwargs.pop("prog", f"python -m {entry}"), description=doc,
                              formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
  return add_arguments(p, entry)


def beam_options(entry: str, name: str, module: str):
  """A PipelineOptions subclass holding `entry`'s options (one per process: see the package doc),
  named `module.name`, where the caller assigns it, so that pickle finds it by reference."""
  from apache_beam.options.pipeline_options import PipelineOptions

  class Options(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
      add_arguments(parser, entry, beam=True)

  Options.__qualname__ = Options.__name__ = name
  Options.__module__ = module
  return Options
