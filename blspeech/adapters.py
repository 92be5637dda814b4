"""Our speech encoders inside ESPnet, icefall and torchaudio pipelines.

Every blspeech encoder is called as ``out, out_lengths = encoder(feats, lengths)`` with
``feats`` (B, T, F) and has ``output_size()``. Where another toolkit expects something
else, a thin wrapper here adapts the call; nothing is copied or re-implemented:

* :class:`ESPnetEncoder`: ESPnet's ``AbsEncoder`` interface (``forward(xs_pad, ilens,
  prev_states=None) -> (out, olens, None)``, built as ``cls(input_size=..., **conf)``).
  When ``espnet2`` is importable it subclasses ESPnet's ``AbsEncoder``, which ESPnet's
  encoder registry and type checks require; without ESPnet it is a plain ``nn.Module``.
* :func:`icefall_encoder`: icefall's model classes assert ``isinstance(encoder,
  EncoderInterface)`` where ``EncoderInterface`` is a recipe-local class, and some recipes
  pass ``warmup=``; the wrapper subclasses the recipe's interface and accepts ``warmup``.
* :class:`TorchaudioTranscriber`: ``torchaudio.models.RNNT`` calls its transcriber as
  ``transcriber(input=..., lengths=...)`` (keywords our encoders do not use) and wants
  ``infer``. Elsewhere in torchaudio (CTC heads, ``ctc_decoder``, ``forced_align``, in
  place of ``torchaudio.models.Conformer``) an encoder is used as it is.
* :func:`load_encoder`: the encoder (weights included) of a ``blspeech train`` checkpoint.

Example:
    >>> import torch
    >>> enc = ESPnetEncoder("bl_resnet_am_tiny", input_size=80)
    >>> out, olens, states = enc(torch.randn(2, 101, 80), torch.tensor([101, 57]))
    >>> out.shape, olens.tolist(), states, enc.output_size()
    (torch.Size([2, 26, 64]), [26, 15], None, 64)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from typing import Any

import torch
from torch import nn

from blspeech.errors import UserError

try:  # ESPnet is optional: without it the adapter is a plain module with the same methods.
    from espnet2.asr.encoder.abs_encoder import AbsEncoder as _ESPnetBase
except ImportError:
    _ESPnetBase = nn.Module


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _check_encoder(encoder: Any) -> nn.Module:
    if not isinstance(encoder, nn.Module) or not callable(getattr(encoder, "output_size", None)):
        raise UserError(f"expected a blspeech speech encoder (an nn.Module with "
                        f"output_size()), got {type(encoder).__name__}")
    return encoder


def _num_mel_bins(encoder: nn.Module) -> int | None:
    dim = getattr(encoder, "config", {}).get("num_mel_bins")
    return None if dim is None else int(dim)


def load_encoder(path: str | os.PathLike, **options: Any) -> nn.Module:
    """The encoder of an acoustic-model checkpoint written by ``blspeech train`` (CTC or
    hybrid head), with its trained weights, in eval mode.

    The encoder is rebuilt from ``model_config["encoder"]`` and gets the ``encoder.*``
    entries of the checkpoint's state_dict (read with ``weights_only=True``). ``options``
    override config entries that do not change the weights' shapes (e.g. ``dropout``).
    Raises UserError (one line naming the file) for missing, corrupt or foreign files.

    Example:
        >>> enc = load_encoder("exp/ctc/best.pt")                  # doctest: +SKIP
        >>> out, out_lengths = enc(feats, lengths)                  # doctest: +SKIP
    """
    from blspeech.io.checkpoint import load_checkpoint
    from blspeech.models import build_model_from_config

    path = os.fspath(path)
    try:
        ckpt = load_checkpoint(path)
    except ValueError as e:
        raise UserError(str(e)) from None
    config = ckpt["model_config"]
    if not isinstance(config, Mapping) or not isinstance(config.get("encoder"), Mapping):
        raise UserError(f"{path} holds no speech encoder: its model_config has no 'encoder' "
                        "entry (acoustic-model checkpoints of 'blspeech train' have one)")
    try:
        encoder = build_model_from_config({**config["encoder"], **options})
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: cannot rebuild the encoder: {_first_line(e)}") from None
    prefix = "encoder."
    state = {k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
    try:
        encoder.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path}: the encoder weights do not fit its config: "
                        f"{_first_line(e)}") from None
    return _check_encoder(encoder).eval()


class ESPnetEncoder(_ESPnetBase):
    """A blspeech speech encoder behind ESPnet's ``AbsEncoder`` interface.

    Args:
        name: a registered encoder name (``bl_resnet_am_small``, ``conformer_tiny``, ...)
            or an already built encoder module. Leave it out with ``checkpoint``.
        input_size: the feature dimension (ESPnet passes its front-end's output size); it
            becomes the encoder's ``num_mel_bins``. None: the preset's (or the module's).
        checkpoint: a ``blspeech train`` checkpoint whose encoder, with its trained weights,
            is wrapped (see :func:`load_encoder`); the module is then in eval mode.
        options: registry options of ``name`` (``dropout=0.2``, ``output_dim=512``, ...);
            with ``checkpoint``, shape-preserving overrides only.

    ESPnet builds encoders as ``encoder_class(input_size=..., **encoder_conf)``, so an
    ``encoder_conf`` of ``{name: bl_resnet_am_small}`` or ``{checkpoint: exp/best.pt}``
    works as is. ``out`` is cut to the longest ``olens``: ESPnet asserts that.

    Example:
        >>> import torch
        >>> enc = ESPnetEncoder("quartznet_tiny", input_size=80, dropout=0.0)
        >>> out, olens, _ = enc(torch.randn(2, 50, 80), torch.tensor([40, 31]))
        >>> out.shape, olens.tolist(), enc.time_subsampling
        (torch.Size([2, 20, 64]), [20, 16], 2)
    """

    # ESPnet's ASR model reads this flag (intermediate-CTC conditioning); we have none.
    interctc_use_conditioning = False

    def __init__(self, name: str | nn.Module | None = None, input_size: int | None = None,
                 *, checkpoint: str | os.PathLike | None = None, **options: Any) -> None:
        super().__init__()
        if name is None and checkpoint is None:
            raise UserError("ESPnetEncoder needs an encoder name (or module) or a checkpoint")
        if name is not None and checkpoint is not None:
            raise UserError("ESPnetEncoder takes an encoder name (or module) or a checkpoint, "
                            "not both")
        if checkpoint is not None:
            encoder = load_encoder(checkpoint, **options)
        elif isinstance(name, str):
            if input_size is not None:
                mel = options.setdefault("num_mel_bins", int(input_size))
                if int(mel) != int(input_size):
                    raise UserError(f"input_size={input_size} and num_mel_bins={mel} "
                                    "disagree; give one of them")
            from blspeech.models import build_model

            try:
                encoder = build_model(name, **options)
            except ValueError as e:
                raise UserError(_first_line(e)) from None
        else:
            if options:
                raise UserError(f"options {', '.join(sorted(options))} apply to a registry "
                                "name, not to an already built encoder")
            encoder = name
        self.encoder = _check_encoder(encoder)
        dim = _num_mel_bins(self.encoder)
        if input_size is not None and dim is not None and dim != int(input_size):
            raise UserError(f"the encoder takes {dim} features per frame but input_size is "
                            f"{input_size}")
        if checkpoint is not None:
            self.eval()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, input_size: int | None = None,
                        **options: Any) -> ESPnetEncoder:
        """The encoder of a ``blspeech train`` checkpoint, weights included, in eval mode."""
        return cls(input_size=input_size, checkpoint=path, **options)

    @property
    def time_subsampling(self) -> int:
        """Input frames per output frame."""
        return int(self.encoder.time_subsampling)

    def output_size(self) -> int:
        return int(self.encoder.output_size())

    def forward(self, xs_pad: torch.Tensor, ilens: torch.Tensor,
                prev_states: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, None]:
        """``(B, T, input_size)`` features and lengths -> ``(B, T', output_size())``, output
        lengths and None (no recurrent state)."""
        if prev_states is not None:
            # Our encoders see whole utterances; running them chunk by chunk with a state
            # would silently give other outputs than on the full input.
            raise UserError("blspeech encoders are not streaming: prev_states must be None")
        out, olens = self.encoder(xs_pad, ilens)
        # Features padded past the longest length would give output frames past the longest
        # olens; ESPnet asserts that there are none.
        return out[:, : int(olens.max())], olens, None


class IcefallEncoder(nn.Module):
    """A blspeech encoder called as icefall calls its encoders (build with
    :func:`icefall_encoder`).

    ``forward(x, x_lens, warmup=1.0) -> (encoder_out, encoder_out_lens)``, ``x`` (N, T, C).
    ``warmup`` (passed by e.g. icefall's pruned_transducer_stateless2, 3 and 5 models) only
    steers icefall's own Conformer layers and is ignored. ``output_dim`` and
    ``subsampling_factor`` are what icefall's ``params.encoder_dim`` and
    ``params.subsampling_factor`` must be set to.
    """

    def __init__(self, encoder: nn.Module) -> None:
        # Not super().__init__(): icefall's EncoderInterface.__init__ wants
        # (num_features, output_dim) and does nothing but call nn.Module.__init__.
        nn.Module.__init__(self)
        self.encoder = _check_encoder(encoder)
        self.output_dim = int(encoder.output_size())
        self.subsampling_factor = int(encoder.time_subsampling)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor, warmup: float = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x, x_lens)


@cache
def _icefall_class(interface: type) -> type:
    # One class per interface, so that every wrapper of a recipe has the same type.
    return type("IcefallEncoder", (IcefallEncoder, interface), {"__module__": __name__})


def icefall_encoder(encoder: nn.Module, interface: type | None = None) -> IcefallEncoder:
    """``encoder`` as an icefall encoder; an instance of ``interface`` when given.

    icefall's ``Transducer``/``AsrModel`` assert ``isinstance(encoder, EncoderInterface)``
    where ``EncoderInterface`` is the recipe's own ``encoder_interface.py``: pass that class
    so the assertion holds.

    Example:
        >>> import torch
        >>> from blspeech.models import build_model
        >>> enc = icefall_encoder(build_model("resnet_am_tiny"))
        >>> out, out_lens = enc(torch.randn(2, 40, 40), torch.tensor([40, 21]), warmup=0.5)
        >>> out.shape, out_lens.tolist(), enc.output_dim, enc.subsampling_factor
        (torch.Size([2, 10, 64]), [10, 6], 64, 4)
    """
    if interface is None or interface is nn.Module:
        return IcefallEncoder(encoder)
    if not (isinstance(interface, type) and issubclass(interface, nn.Module)):
        raise UserError(f"interface must be an nn.Module subclass (icefall's "
                        f"EncoderInterface), got {interface!r}")
    return _icefall_class(interface)(encoder)


class TorchaudioTranscriber(nn.Module):
    """A blspeech encoder as the transcriber of ``torchaudio.models.RNNT``.

    ``forward(input, lengths)`` takes the keywords ``RNNT`` passes. ``infer`` (streaming,
    used by ``RNNT.transcribe_streaming`` and ``RNNTBeamSearch.infer``) raises: our
    encoders need whole utterances; ``RNNTBeamSearch(...)(input, length, beam_width)``
    decodes through :meth:`forward`.

    Example:
        >>> import torch
        >>> from blspeech.models import build_model
        >>> t = TorchaudioTranscriber(build_model("bl_resnet_am_tiny"))
        >>> out, lengths = t(input=torch.randn(1, 40, 40), lengths=torch.tensor([40]))
        >>> out.shape, lengths.tolist()
        (torch.Size([1, 10, 64]), [10])
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = _check_encoder(encoder)

    def output_size(self) -> int:
        return int(self.encoder.output_size())

    def forward(self, input: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(input, lengths)

    def infer(self, input: torch.Tensor, lengths: torch.Tensor,
              states: list[list[torch.Tensor]] | None
              ) -> tuple[torch.Tensor, torch.Tensor, list[list[torch.Tensor]]]:
        raise UserError("blspeech encoders are not streaming: use RNNT.transcribe or "
                        "RNNTBeamSearch(...)(input, length, beam_width), not streaming "
                        "inference")


__all__ = ["ESPnetEncoder", "IcefallEncoder", "TorchaudioTranscriber", "icefall_encoder",
           "load_encoder"]
