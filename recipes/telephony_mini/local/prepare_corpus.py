#!/usr/bin/env python3
"""Build the telephony_mini corpus: data/{train,dev,test_real,test_synth} at 8 kHz.

A thin wrapper of :func:`blspeech.corpora.telephony_cli.main`; run with --help for the
options. Output goes to this recipe's data/ folder unless --data-dir says otherwise.
"""

import os
import sys

from blspeech.corpora.telephony_cli import main

if __name__ == "__main__":
    recipe_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main(default_data_dir=os.path.join(recipe_dir, "data")))
