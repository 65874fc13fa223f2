"""`python -m launcher VERB ...`: what launch.sh runs."""
import sys

from launcher.cli import main

sys.exit(main())
