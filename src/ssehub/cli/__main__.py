"""``python -m ssehub.cli``."""

import sys

from . import main

sys.exit(main())
