"""``python -m dpmap.cli``: the same as the ``dpmap`` command."""

import sys

from dpmap.cli.app import main

sys.exit(main())
