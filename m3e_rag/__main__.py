"""``python -m m3e_rag`` runs the ``m3e-rag`` command."""

import sys

from .cli import main

sys.exit(main())
