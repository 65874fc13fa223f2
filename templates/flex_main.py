"""Entry point of the Flex Template: the launcher runs this file as a script.

It is not pipeline/run.py itself because a script's own directory goes first on sys.path:
run from pipeline/, its modules (io.py, ...) would shadow top-level modules of the same name.
From here only this file is beside it, and `pipeline` is the package installed in the image.
The exit status is passed on, so a launch that fails (no input matched, model unavailable)
fails the template launch instead of leaving no job behind silently.
"""
import sys

from pipeline.run import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
