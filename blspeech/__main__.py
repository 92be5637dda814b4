"""``python -m blspeech`` runs the command-line interface."""

from blspeech.cli import main

raise SystemExit(main())
