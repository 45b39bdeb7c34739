"""``python -m dynacor`` is the same as the ``dynacor`` command."""

import sys

from dynacor.cli.main import main

sys.exit(main())
