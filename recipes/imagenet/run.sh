#!/usr/bin/env bash
# ImageNet recipe: train and evaluate a bL-Net (or ResNet baseline) classifier with DDP.
#
# Usage: recipes/imagenet/run.sh --data-dir DIR [options]
#
# Stages:
#   0  check the data directory and the Python environment
#   1  train with torchrun (resumes from EXP_DIR/last.pt when present)
#   2  evaluate EXP_DIR/best.pt on val/ and print the final metrics as one JSON line
#      (also written to EXP_DIR/eval_best.json); runs on --node-rank 0 only
#
# Options (default in brackets):
#   --stage N                first stage to run [0]
#   --stop-stage N           last stage to run [2]
#   --data-dir DIR           ImageFolder root with train/ and val/ (required)
#   --model NAME             registered model, e.g. bl_resnet50, bl_resnext101_64x4d [bl_resnet50]
#   --nproc-per-node N       processes per node: GPUs per node, or CPU workers [1]
#   --nnodes N               number of nodes [1]
#   --node-rank N            rank of this node, 0..nnodes-1 [0]
#   --master-addr HOST       address of node 0 (multi-node only) [127.0.0.1]
#   --master-port PORT       port on node 0; empty with --nnodes 1 picks a free one []
#   --epochs N               training epochs [110]
#   --batch-size N           images per process and step [64]
#   --lr LR                  peak learning rate; 0.1 for a global batch of 256 [0.1]
#   --image-size N           training crop / validation crop size [224]
#   --amp MODE               none, bf16 or fp16 (fp16 only on CUDA) [none]
#   --device DEV             cpu or cuda; empty = cuda when available []
#   --exp-dir DIR            output folder [recipes/imagenet/exp/<model>]
#   --max-steps-per-epoch N  cap steps per epoch for smoke tests; 0 = no cap [0]
#   --resume true|false      continue from EXP_DIR/last.pt when it exists [true]
#   --extra-args "ARGS"      more flags for python -m blspeech.training.vision, e.g.
#                            "--optimizer adamw --warmup-epochs 5 --workers 16" []
#
# Python: the script runs ${PYTHON:-python3}; activate the virtual environment that has
# blspeech and torchvision installed first, or set PYTHON=/path/to/venv/bin/python.
#
# ImageNet layout (as produced by the usual ILSVRC2012 preparation scripts):
#   DIR/train/n01440764/n01440764_10026.JPEG ...   1000 class folders, 1.28M images
#   DIR/val/n01440764/ILSVRC2012_val_00000293.JPEG  same 1000 class folders, 50k images
#
# Examples:
#   # one node, 8 GPUs (global batch 8 x 32 = 256)
#   recipes/imagenet/run.sh --data-dir /data/imagenet --nproc-per-node 8 --batch-size 32
#
#   # two nodes with 8 GPUs each; run on both, --node-rank 0 on the master (10.0.0.1).
#   # EXP_DIR must be on a filesystem shared by both nodes.
#   recipes/imagenet/run.sh --data-dir /data/imagenet --nnodes 2 --node-rank 0 \
#     --nproc-per-node 8 --master-addr 10.0.0.1 --master-port 29500 --batch-size 16 \
#     --exp-dir /shared/exp/bl_resnet50
#   recipes/imagenet/run.sh ... the same ... --node-rank 1
#
#   # CPU smoke test
#   recipes/imagenet/run.sh --data-dir /tmp/tiny --device cpu --nproc-per-node 2 \
#     --epochs 2 --image-size 32 --max-steps-per-epoch 2 --extra-args "--workers 0"

set -euo pipefail

stage=0
stop_stage=2
data_dir=
model=bl_resnet50
nproc_per_node=1
nnodes=1
node_rank=0
master_addr=127.0.0.1
master_port=
epochs=110
batch_size=64
lr=0.1
image_size=224
amp=none
device=
exp_dir=
max_steps_per_epoch=0
resume=true
extra_args=

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$recipe_dir/../utils/parse_options.sh"

if (( $# > 0 )); then
  echo "$0: unexpected argument '$1' (see $0 --help)" >&2
  exit 2
fi

PYTHON=${PYTHON:-python3}
exp_dir=${exp_dir:-$recipe_dir/exp/$model}
read -r -a extra <<< "$extra_args"

die() {
  echo "$0: error: $*" >&2
  exit 2
}

# torchrun from the active interpreter, so the venv's torch is used.
launch() {
  local rdzv
  if [[ $nnodes == 1 && -z $master_port ]]; then
    rdzv=(--standalone)
  else
    rdzv=(--nnodes "$nnodes" --node-rank "$node_rank" --master-addr "$master_addr"
          --master-port "${master_port:-29500}")
  fi
  "$PYTHON" -m torch.distributed.run "${rdzv[@]}" --nproc-per-node "$nproc_per_node" "$@"
}

common=(--data-dir "$data_dir" --image-size "$image_size" --batch-size "$batch_size"
        --amp "$amp")
[[ -n $device ]] && common+=(--device "$device")
train_args=("${common[@]}" --model "$model" --epochs "$epochs" --lr "$lr" --exp-dir "$exp_dir"
            --max-steps-per-epoch "$max_steps_per_epoch")
[[ $resume == true ]] && train_args+=(--resume)
train_args+=(${extra[@]+"${extra[@]}"})

if (( stage <= 0 && 0 <= stop_stage )); then
  echo "stage 0: checking $data_dir and $PYTHON"
  [[ -n $data_dir ]] || die "--data-dir is required"
  [[ -d $data_dir ]] || die "--data-dir $data_dir does not exist or is not a directory"
  for split in train val; do
    [[ -d $data_dir/$split ]] || die "$data_dir has no $split/ folder (expected $split/<class>/<image>)"
  done
  command -v "$PYTHON" > /dev/null || die "python interpreter '$PYTHON' not found; set PYTHON"
  # find_spec only locates the packages, which is much faster than importing torch.
  "$PYTHON" -c 'import importlib.util as u, sys
missing = [m for m in ("torch", "torchvision", "blspeech") if u.find_spec(m) is None]
sys.exit("missing Python packages: " + ", ".join(missing) if missing else 0)' \
    || die "$PYTHON lacks packages; activate the blspeech venv or set PYTHON"
  # One plain process validates data, model and options, so mistakes show up as one
  # line here instead of failing inside every torchrun worker.
  "$PYTHON" -m blspeech.training.vision "${train_args[@]}" --check-only
fi

if (( stage <= 1 && 1 <= stop_stage )); then
  echo "stage 1: training $model in $exp_dir"
  [[ -n $data_dir ]] || die "--data-dir is required"
  launch -m blspeech.training.vision "${train_args[@]}"
fi

if (( stage <= 2 && 2 <= stop_stage )); then
  if [[ $node_rank != 0 ]]; then
    echo "stage 2: skipped on node rank $node_rank (node 0 evaluates)"
    exit 0
  fi
  [[ -n $data_dir ]] || die "--data-dir is required"
  [[ -f $exp_dir/best.pt ]] || die "$exp_dir/best.pt does not exist; run stage 1 first"
  echo "stage 2: evaluating $exp_dir/best.pt"
  echo "final metrics (also in $exp_dir/eval_best.json):"
  # Evaluation needs no other node: a fresh single-node job on a free port. Training-only
  # flags in --extra-args are accepted and ignored by --evaluate.
  "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node "$nproc_per_node" \
    -m blspeech.training.vision "${common[@]}" --evaluate "$exp_dir/best.pt" \
    ${extra[@]+"${extra[@]}"}
fi
