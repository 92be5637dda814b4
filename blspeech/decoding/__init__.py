"""Search over a model's outputs: CTC greedy and prefix beam, lexicon + LM, hybrid Viterbi."""
