"""`python -m nbd` runs the daemon (what clients start when the socket does not answer)."""

from nbd.main import main

raise SystemExit(main())
