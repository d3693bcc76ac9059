"""`python -m flows.cli`: the `vidbatch` command."""

import sys

from flows.cli.main import main

sys.exit(main())
