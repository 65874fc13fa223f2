"""koedu's command-line options, each declared once, and everything made from the declarations.

An option is one `Option` in options/catalog.py: its name (the flag is `--name`), what parses
its text, its default, its help, and the entry points that take it (`used_by`). From that one
list come:

- every entry point's argparse: `parser(entry)` (or `add_arguments(parser, entry)` onto one
  you made): `python -m train.run`, `train.annotate`, `pipeline.compare`, `pipeline.rethreshold`,
  `pipeline.publish`, each verb of `launch.sh` (its flags and their KOEDU_* variables);
- Beam's options of `python -m pipeline.run`: `beam_options("pipeline.run")`, a PipelineOptions
  subclass (read it back with `view_as`, as pipeline/options.py does);
- the Flex Template metadata, templates/koedu_score_metadata.json, and the option list,
  docs/options.md: `python -m options.render` writes both; tests/options/ fail when a committed
  file differs from what the catalog renders.

Adopting it in a new entry point (pipeline.publish and train.annotate did so last: read them):
  1. In catalog.py, add the entry point's name to `used_by` of each option it shares with the
     others (`output`, `threshold`, `text_field`, `id_field`, the caches, ...), and declare its
     own options with `used_by=("pipeline.publish",)`. An option whose meaning, type or
     default differs from a shared one of the same name is a declaration of its own (two
     declarations may share a name when no entry point takes both: catalog.check() says so).
  2. In its main:  `args = options.parser("pipeline.publish", doc=__doc__).parse_args(argv)`.
     A Beam job other than pipeline.run parses its own flags with `parse_known_args` and gives
     the rest to `PipelineOptions`: a second PipelineOptions subclass declaring `--output`
     would clash with pipeline.run's in every process that imports both.
  3. Add it to ENTRY_POINTS in catalog.py (the order of docs/options.md), run
     `python -m options.render`, commit the changed docs/options.md.

Nothing here imports JAX or Beam at import time: the launcher runs it on a laptop. A default
that another module owns (TrainConfig's recipe, the hub's default model) is a `Ref` to it,
resolved when a parser or a document is made, so that module stays its one home.
"""
from options.declare import Option, Ref, Template, add_arguments, beam_options, declared, parser

__all__ = ["Option", "Ref", "Template", "add_arguments", "beam_options", "declared", "parser"]
