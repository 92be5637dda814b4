"""Trained models at work: loading, bundles, decoding data dirs, forced alignment, chunked
inference, export, Kaldi forward, efficiency comparison."""
