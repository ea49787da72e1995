#!/usr/bin/env bash
# A batch on the tiny checkpoint, its JSON Lines piped into jq: one line per image with path and timings.
# Usage: bash examples/pipeline.sh [OUT_DIR]
set -euo pipefail
out="${1:-llada-demo/batch}"
llada generate --prompts-file examples/prompts.txt --model tiny --size 256x256 --seed 7 --out-dir "$out" --json \
  | jq -c '{path, seed, backbone_s: .backbone.seconds, decoder_s: .decoder.seconds}'
