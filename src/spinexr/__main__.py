"""Allow ``python -m spinexr``."""

from spinexr.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
