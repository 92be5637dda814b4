"""WFST decoding of CTC models from pip wheels: a TLG graph (kaldifst, kaldilm) searched by
Kaldi's decoders (kaldi-decoder).

* :mod:`blspeech.decoding.wfst.graph` builds the graph: ``T`` (CTC topology over the
  tokenizer's pieces), ``L`` (each word spelled with those pieces), ``G`` (the ARPA word
  n-gram, ``kaldilm.arpa2fst``), composed, determinized and minimized into ``TLG.fst``
  with ``words.txt`` and ``tokens.txt`` beside it (:func:`make_graph`).
* :mod:`blspeech.decoding.wfst.search` decodes ``(T, V)`` log-probabilities with that graph
  (:class:`WfstDecoder`): 1-best words and their token frames, for text and CTM.

Both need the ``wfst`` extra (``pip install -e '.[wfst]'``).
"""

from blspeech.decoding.wfst.graph import GraphInfo, make_graph
from blspeech.decoding.wfst.search import WfstDecoder

__all__ = ["GraphInfo", "WfstDecoder", "make_graph"]
