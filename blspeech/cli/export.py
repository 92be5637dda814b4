"""Export command: ``export`` (a bundle's model as TorchScript, ONNX or a sherpa-onnx
model directory)."""

from __future__ import annotations

import argparse
import json

DESCRIPTION = """\
Export the acoustic model of BUNDLE (see 'blspeech make-bundle') to one file that runs
without blspeech, with a dynamic batch and time axis. The export is checked before the
file is written (atomically): the file is reloaded and run on inputs of other lengths
against the bundle; the JSON summary printed gives max_abs_diff, the largest difference.

--format torchscript (waveform in: front-end + CMVN + model; needs only torch)
  inputs   wave          float32 (B, N)      samples in [-1, 1] at the bundle's sample
                                             rate; N >= one analysis window
                                             (frame_length_ms, 25 ms by default)
           wave_lengths  int64   (B,)        valid samples of each row
  outputs  log_probs     float32 (B, T', V)  log-probabilities per output frame
           out_lengths   int64   (B,)        valid frames of each row

--format onnx (features in: CMVN + model; opset 20, onnxruntime on the CPU)
  inputs   feats         float32 (B, T, F)   log-mel features before CMVN, as
                                             Bundle.features / Kaldi compute-fbank-feats
           lengths       int64   (B,)        valid frames of each row
  outputs  log_probs     float32 (B, T', V)
           out_lengths   int64   (B,)

--format sherpa-onnx (a directory for sherpa-onnx's offline recognizer, CTC heads only)
  OUTPUT/model.onnx        the onnx export as a sherpa-onnx WeNet CTC model (metadata
                           vocab_size, subsampling_factor; CMVN inside)
  OUTPUT/tokens.txt        'symbol id' per line, <blank> at 0, sentencepiece's word start
  OUTPUT/sherpa-onnx.json  model_type and feat_config: the sherpa_onnx.FeatureExtractorConfig
                           arguments that give the bundle's features (pass them: the
                           from_wenet_ctc shortcut keeps high_freq -400, snip_edges off)
  Bundles whose front-end sherpa-onnx cannot compute (frame length/shift, window,
  pre-emphasis, DC removal, energy, sample scale other than Kaldi's defaults) or with a
  hybrid head are refused. sherpa-onnx always dithers its input (about one 16-bit step),
  so its transcripts can differ from 'blspeech transcribe' on near-ties (see the README).

T' = ceil(T / time subsampling) (T: feature frames of N samples); frames past out_lengths
are zero. V: CTC tokens (blank = 0) or hybrid pdfs (log-posteriors). The summary also gives
sample_rate, feature_dim (F), outputs_per_frame (V) and time_subsampling.
Encoders: resnet_am, bl_resnet_am (Big-Little), quartznet, conformer (all presets)."""

EPILOG = """\
examples:
  blspeech export exp/bl/final.bundle --format torchscript --output bl.pt
  blspeech export exp/bl/final.bundle --format onnx --output bl.onnx
  blspeech export exp/bl/final.bundle --format sherpa-onnx --output bl-sherpa

torch (no blspeech needed):
  import torch, soundfile
  m = torch.jit.load("bl.pt")
  wave, rate = soundfile.read("call.wav", dtype="float32")    # at the bundle's rate
  log_probs, out_lengths = m(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))

onnxruntime:
  import numpy as np, onnxruntime
  sess = onnxruntime.InferenceSession("bl.onnx", providers=["CPUExecutionProvider"])
  log_probs, out_lengths = sess.run(None, {"feats": feats.astype(np.float32),
                                           "lengths": np.array([len(feats)], np.int64)})
  # feats (1, T, F): e.g. blspeech.load_bundle(b).features(samples)[0].numpy()

sherpa-onnx (pip install sherpa-onnx; no blspeech or torch needed):
  import json, soundfile, sherpa_onnx as so
  from sherpa_onnx.lib._sherpa_onnx import OfflineRecognizer
  s = json.load(open("bl-sherpa/sherpa-onnx.json"))
  rec = OfflineRecognizer(so.OfflineRecognizerConfig(
      feat_config=so.FeatureExtractorConfig(**s["feat_config"]),
      model_config=so.OfflineModelConfig(
          wenet_ctc=so.OfflineWenetCtcModelConfig(model="bl-sherpa/model.onnx"),
          tokens="bl-sherpa/tokens.txt", model_type=s["model_type"])))
  wave, rate = soundfile.read("call.wav", dtype="float32")
  stream = rec.create_stream(); stream.accept_waveform(rate, wave)
  rec.decode_stream(stream); print(stream.result.text)"""


def cmd_export(args: argparse.Namespace) -> int:
    from blspeech.inference.export import export_bundle

    print(json.dumps(export_bundle(args.bundle, args.output, args.format)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``blspeech`` parser."""
    p = sub.add_parser(
        "export",
        help="export a bundle's model to TorchScript (waveform in), ONNX (features in) or "
             "a sherpa-onnx model directory",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("bundle", metavar="BUNDLE", help="a bundle file ('blspeech make-bundle')")
    p.add_argument("--format", metavar="FORMAT",
                   help="torchscript, onnx or sherpa-onnx (default: from the output's "
                        "suffix: .onnx, or .pt / .ts for torchscript)")
    p.add_argument("--output", "-o", required=True, metavar="PATH",
                   help="file to write (sherpa-onnx: a directory)")
    p.set_defaults(func=cmd_export)
