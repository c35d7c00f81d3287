#!/usr/bin/env bash
# The README's main job: build the demo data, train on it, evaluate the checkpoint, print the results.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEMO_DIR=${DEMO_DIR:-demo_data}
DEMO_SOURCE=${DEMO_SOURCE:-auto}
DEMO_OUT=${DEMO_OUT:-output/demo}
ITA_TYPE=${ITA_TYPE:-isogclr_new}

start=$(date +%s)
"$PYTHON" bimodal_exps/build_demo_data.py --source "$DEMO_SOURCE" --out "$DEMO_DIR"
source=$(cat "$DEMO_DIR/SOURCE")
# clip.py refuses a fresh run into a folder holding another run's checkpoints; the demo starts over instead.
if [[ -f "$DEMO_OUT/args.json" ]]; then
    echo "note: removing the earlier demo run in $DEMO_OUT (set DEMO_OUT=DIR to keep it)"
    rm -rf "$DEMO_OUT"
fi
"$PYTHON" bimodal_exps/clip.py --config "configs/demo_${source}.yaml" \
    --data_path "$DEMO_DIR/datasets" --ann_path "$DEMO_DIR/clip_train" \
    --output_dir "$DEMO_OUT" --ita_type "$ITA_TYPE" "$@"
epochs=$("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['epochs'])" "$DEMO_OUT/args.json")
echo "== evaluating $DEMO_OUT/checkpoint_${epochs}.pth =="
"$PYTHON" bimodal_exps/clip.py --config "configs/demo_${source}.yaml" \
    --data_path "$DEMO_DIR/datasets" --ann_path "$DEMO_DIR/clip_train" \
    --output_dir "$DEMO_OUT/eval" --ita_type "$ITA_TYPE" \
    --evaluate --checkpoint "$DEMO_OUT/checkpoint_${epochs}.pth"
echo "demo ($source, $ITA_TYPE) finished in $(( $(date +%s) - start )) s; outputs in $DEMO_OUT"
