#!/usr/bin/env bash
# Distills Minitron-4B from Nemotron-4 15B on NODES nodes started the way
# torchrun starts jobs: run this script once on every node, with the same
# HEAD (the host of node 0) and each node's NODE_RANK:
#
#   HEAD=node01 NODES=4 NODE_RANK=0 bash recipes/examples/torchrun-minitron-4b.sh   # on node01
#   HEAD=node01 NODES=4 NODE_RANK=1 bash recipes/examples/torchrun-minitron-4b.sh   # on node02 ...
#
# torchrun starts one minitron process per node (--nproc_per_node=1), which
# drives every GPU of the node; minitron reads WORLD_SIZE, RANK, MASTER_ADDR
# and MASTER_PORT from it (the port after MASTER_PORT when torchrun's agent
# keeps MASTER_PORT for itself). Without torchrun, the same variables set
# by hand do the same:
#
#   WORLD_SIZE=4 RANK=$NODE_RANK MASTER_ADDR=node01 MASTER_PORT=29500 \
#     minitron distill --config recipes/examples/distill-minitron-4b.yaml --out runs/minitron-4b/distill
set -euo pipefail

: "${HEAD:?set HEAD to the host of node 0}"
: "${NODES:?set NODES to the number of nodes}"
: "${NODE_RANK:?set NODE_RANK to the index of this node, 0 to NODES-1}"
MINITRON=${MINITRON:-minitron}
CONFIG=${CONFIG:-recipes/examples/distill-minitron-4b.yaml}
OUT=${OUT:-runs/minitron-4b/distill}

exec torchrun --nnodes="$NODES" --nproc_per_node=1 --node_rank="$NODE_RANK" \
  --master_addr="$HEAD" --master_port="${PORT:-29500}" --no_python \
  "$MINITRON" distill --config "$CONFIG" --out "$OUT"
