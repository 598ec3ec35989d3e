"""`python -m proxy` is the `edge-proxy` command."""

from proxy.cli import main

raise SystemExit(main())
