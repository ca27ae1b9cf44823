"""``python -m nonsense_hpc`` runs the command line."""

import sys

from nonsense_hpc.cli.main import main

sys.exit(main())
