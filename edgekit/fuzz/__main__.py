"""``python -m edgekit.fuzz``: the fuzzer, as the campaign's own processes run it."""
import sys

from edgekit.fuzz.run import main

sys.exit(main())
