"""Input and output: Kaldi tables and archives, data dirs, audio, checkpoints, atomic files."""
