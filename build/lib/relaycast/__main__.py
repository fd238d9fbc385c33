"""``python -m relaycast`` is the ``relaycast`` command."""

import sys

from relaycast.cli import main

if __name__ == "__main__":
    sys.exit(main())
