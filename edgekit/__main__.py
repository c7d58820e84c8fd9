"""``python -m edgekit``: the same command line as the ``edgekit`` script (edgekit.cli.main), exit code
included."""
import sys

from edgekit.cli import main

sys.exit(main())
