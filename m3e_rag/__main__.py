"""``python -m m3e_rag`` runs the ``m3e-rag`` command."""

import sys

from m3e_rag.cli.dispatch import main

sys.exit(main())
