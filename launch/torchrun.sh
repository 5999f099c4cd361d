#!/usr/bin/env bash
# gandist training on one machine with torchrun: NPROC_PER_NODE data-parallel processes.
#
#   NPROC_PER_NODE=8 launch/torchrun.sh stylegan_256 --out runs/ffhq256 --resume auto --set data.path=data/ffhq256
#
# Arguments go to `gandist train` as they are. Environment:
#   NPROC_PER_NODE    processes (default: the number of visible GPUs, else 1)
#   STRATEGY          train.strategy (default: ddp with more than one process, else the config's)
#   SHUTDOWN_TIMEOUT  seconds the workers get to save after SIGTERM/SIGUSR2 before SIGKILL (default 150)
#   PYTHON            interpreter with gandist and torch installed (default python3)
# torchrun forwards SIGTERM, SIGINT and SIGUSR2 to the workers: they save a checkpoint at the end of the
# current step and stop; run the same command with `--resume auto` to continue.
set -euo pipefail
PYTHON=${PYTHON:-python3}
if [ -z "${NPROC_PER_NODE:-}" ]; then
  NPROC_PER_NODE=$("$PYTHON" -c "import torch; print(max(torch.cuda.device_count(), 1))")
fi
strategy=()
if [ -n "${STRATEGY:-}" ]; then
  strategy=(--set "train.strategy=$STRATEGY")
elif [ "$NPROC_PER_NODE" -gt 1 ]; then
  strategy=(--set train.strategy=ddp)
fi
exec "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node "$NPROC_PER_NODE" \
  --signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR2 --shutdown-timeout "${SHUTDOWN_TIMEOUT:-150}" \
  -m gandist train "${strategy[@]}" "$@"
