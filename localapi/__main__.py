"""`python -m localapi`: serve the offline provider in the foreground."""

from localapi.server import main

raise SystemExit(main())
