"""WFST decoding from pip wheels: a decoding graph (kaldifst, kaldilm) searched by Kaldi's
decoders (kaldi-decoder).

* :mod:`blspeech.decoding.wfst.graph` builds the graph of a CTC model: ``T`` (CTC topology
  over the tokenizer's pieces), ``L`` (each word spelled with those pieces), ``G`` (the ARPA
  word n-gram, ``kaldilm.arpa2fst``), composed, determinized and minimized into ``TLG.fst``
  with ``words.txt`` and ``tokens.txt`` beside it (:func:`make_graph`).
* :mod:`blspeech.decoding.wfst.hlg` builds the graph of a hybrid model trained on a
  monophone GMM-HMM's pdfs (``blspeech align-gmm``): ``H`` (the phones' HMMs over those
  pdfs), ``L`` (the pronunciation lexicon), ``G`` (:func:`~blspeech.decoding.wfst.hlg.make_hlg`,
  ``HLG.fst``).
* :mod:`blspeech.decoding.wfst.search` decodes ``(T, V)`` log-probabilities (or a hybrid
  model's scaled log-likelihoods) with either graph (:class:`WfstDecoder`): 1-best words
  and their frames, for text and CTM.

All need the ``wfst`` extra (``pip install -e '.[wfst]'``).
"""

from blspeech.decoding.wfst.graph import GraphInfo, make_graph
from blspeech.decoding.wfst.search import WfstDecoder

__all__ = ["GraphInfo", "WfstDecoder", "make_graph"]
