"""Corpus builders: Kaldi data dirs made from material installed on this machine.

``telephony``: the ``telephony_mini`` corpus (8 kHz telephone speech from espeak-ng,
flite and Asterisk's recorded prompts), with ``telephony_cli`` its command line;
``telephony_text``: its sentences; ``synth``: synthesis and the telephone channel;
``number_words``: numbers as spoken words.
"""
