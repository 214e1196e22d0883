"""``python -m examples.demo.daraja_sim``: serve the simulator until Ctrl-C or SIGTERM."""

import sys

from . import main

sys.exit(main())
