"""Text: normalization, character and BPE tokenizers, word n-gram language models."""
