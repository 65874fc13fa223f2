#!/usr/bin/env bash
# Run koedu on Google Cloud: score a corpus on Dataflow with TPU or GPU workers, build the worker
# container and the Flex Template, schedule corpus builds, and train on a TPU VM.
#
#   ./launch.sh --help                 the verbs, their flags and KOEDU_* variables
#   ./launch.sh VERB --help            one verb's flags (all of them: docs/options.md)
#   ./launch.sh VERB --dry_run ...     print every command and option, run none
#
# A shim: the launcher is the Python package launcher/ (standard library only, Python 3.9+),
# which reads and checks the flags and variables and prints or runs each gcloud, docker and
# python command. Its interpreter is $KOEDU_LAUNCHER_PYTHON (default: python3); the scoring
# job's is $KOEDU_PYTHON (default: python), which should be 3.11. Why each option is there:
# docs/operations.md.
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}"
exec "${KOEDU_LAUNCHER_PYTHON:-python3}" -m launcher "$@"
