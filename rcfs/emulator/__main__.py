"""`python -m rcfs.emulator`: run the emulator server (see `rcfs.emulator.server`)."""

from __future__ import annotations

import sys

from .server import main

if __name__ == "__main__":
    sys.exit(main())
