"""``python -m demo_services``: see demo_services.cli."""

from __future__ import annotations

import sys

from demo_services.cli import main

if __name__ == "__main__":
    sys.exit(main())
