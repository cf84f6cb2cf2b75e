"""`python -m autolr` (and `accelerate launch -m autolr`) runs the CLI."""

from autolr.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
