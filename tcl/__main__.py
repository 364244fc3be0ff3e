"""``python -m tcl VERB [args]``: the command line of the artifact (tcl.cli)."""

import sys

from tcl.cli import main

if __name__ == "__main__":
    sys.exit(main())
