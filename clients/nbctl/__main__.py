"""`python -m nbctl` is `nbctl`."""

from nbctl.main import main

raise SystemExit(main())
