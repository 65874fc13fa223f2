"""The launcher behind launch.sh: Dataflow scoring jobs on TPU or GPU workers, the worker image,
the Flex Template, scheduled corpus builds, TPU VM training (docs/operations.md).

Python's standard library only (and options/, which declares the flags), so it runs on a laptop
with any Python 3.9+: launch.sh is a shim that runs `python3 -m launcher`.

- cli.py: flags and KOEDU_* variables (options/catalog.py) -> checked settings; the Shell that
  prints each command shell-quoted (--dry_run: and runs none) or runs it.
- shapes.py: one worker shape (TPU or GPU: machine type, accelerator, process layout, sizes),
  rendered into Beam flags, the template's defaults and the scheduler's runtime environment.
- verbs.py: the commands of score, image, template, schedule and train.

A package of its own, not part of pipeline/: it never runs on a worker, imports neither Beam
nor JAX, and starts train/ and scheduled jobs as well as pipeline.run.
"""
