"""The front-end: log-mel features, CMVN, SpecAugment, feature extraction jobs."""
