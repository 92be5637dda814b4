"""Kaldi-style HMM topology and the monophone model's index tables.

Non-silence phones: 3 emitting states, left to right, self-loop 0.75 (Kaldi's
``utils/gen_topo.pl``); silence: 5 emitting states, states 0-3 fully connected forward and
back (Kaldi's ergodic silence), state 4 the exit. Phone ids: ``SIL`` is 1, the others
follow (``phones.txt``). Word-position-dependent phones are not used: a monophone aligner
gains little from them and they quadruple the pdfs of a small corpus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def topology_text(num_phones: int, silence: Sequence[int] = (1,)) -> str:
    """Kaldi's text topology for phones ``1..num_phones`` (``silence``: the 5-state ones).

    Example:
        >>> print(topology_text(3).splitlines()[3])
        <State> 0 <PdfClass> 0 <Transition> 0 0.75 <Transition> 1 0.25 </State>
    """
    sil = sorted(silence)
    other = [p for p in range(1, num_phones + 1) if p not in sil]
    lines = ["<Topology>"]
    if other:
        lines += ["<TopologyEntry>", f"<ForPhones> {' '.join(map(str, other))} </ForPhones>"]
        for s in range(3):
            lines.append(f"<State> {s} <PdfClass> {s} <Transition> {s} 0.75 "
                         f"<Transition> {s + 1} 0.25 </State>")
        lines += ["<State> 3 </State>", "</TopologyEntry>"]
    if sil:
        lines += ["<TopologyEntry>", f"<ForPhones> {' '.join(map(str, sil))} </ForPhones>",
                  "<State> 0 <PdfClass> 0 " + " ".join(f"<Transition> {d} 0.25"
                                                       for d in range(4)) + " </State>"]
        for s in (1, 2, 3):
            lines.append(f"<State> {s} <PdfClass> {s} " + " ".join(
                f"<Transition> {d} 0.25" for d in (1, 2, 3, 4)) + " </State>")
        lines += ["<State> 4 <PdfClass> 4 <Transition> 4 0.75 <Transition> 5 0.25 </State>",
                  "<State> 5 </State>", "</TopologyEntry>"]
    lines.append("</Topology>")
    return "\n".join(lines) + "\n"


@dataclass
class PhoneHmm:
    """One phone's HMM in the transition model's numbering.

    ``arcs[s]``: ``(dst, transition_id)`` of emitting state ``s`` (``dst == num_states``:
    the phone's exit); ``pdfs[s]``: the pdf of state ``s``.
    """

    phone: int
    num_states: int
    pdfs: list[int] = field(default_factory=list)
    arcs: list[list[tuple[int, int]]] = field(default_factory=list)


def phone_hmms(trans_model: Any, topo: Any) -> dict[int, PhoneHmm]:
    """Every phone's :class:`PhoneHmm`. Transition states are numbered phone by phone,
    state by state (Kaldi's tuple order for a monophone tree); checked against the model."""
    out: dict[int, PhoneHmm] = {}
    tstate = 0
    for phone in sorted(topo.phones):
        states = topo.topology_for_phone(phone)
        emitting = [s for s in states if s.forward_pdf_class != -1]
        hmm = PhoneHmm(phone, len(emitting))
        for s in emitting:
            tstate += 1
            first = trans_model.state2id[tstate]
            if trans_model.transition_id_to_phone(first) != phone:
                raise RuntimeError(f"transition model numbering differs for phone {phone}")
            hmm.pdfs.append(trans_model.transition_id_to_pdf(first))
            hmm.arcs.append([(dst, first + i) for i, (dst, _) in enumerate(s.transitions)])
        out[phone] = hmm
    if tstate != trans_model.num_transition_states:
        raise RuntimeError("transition model numbering differs from the topology")
    return out


__all__ = ["PhoneHmm", "phone_hmms", "topology_text"]
