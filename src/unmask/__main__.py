"""``python -m unmask ...``: the ``unmask`` command (``unmask.cli``), for an environment whose
scripts folder is not on the PATH."""

import sys

from unmask.cli import main

if __name__ == "__main__":
    sys.exit(main())
