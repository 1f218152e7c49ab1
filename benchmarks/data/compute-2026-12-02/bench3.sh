#!/usr/bin/env bash
# after the model file's re-measurement: the quickstart with a tolerance again (the compute phase's
# levers now take turns), then every adopted file's deviation re-checked independently
set -u
cd . && . .venv/bin/activate
OUT=results/compute-2026-12-02
R="--seeds 1 --rounds 4 --seconds 4 --warmup 5"
while ! pgrep -f "repro.py configs/sequential_map" > /dev/null; do sleep 3; done
pkill -f "results/bench2.sh"; pkill -f "repro.py configs/sequential_map"; sleep 2
pkill -f "tuner search --config configs/sequential_map"; sleep 2
date -u +"bench3 start %FT%TZ"; uptime
python benchmarks/repro.py configs/quickstart.yaml $R --search-arg=--accuracy-tolerance --search-arg=0.05 --tag=-tol2 --out $OUT/quickstart-tol2 > $OUT/quickstart-tol2.txt 2>&1
rm -f $OUT/accuracy.txt
for f in $OUT/*/*/tuned.yaml $OUT/modelfile-tol/tuned.yaml; do
  [ -f "$f" ] || continue
  n=$(echo $f | tr '/' '_')
  python benchmarks/accuracy_check.py "$f" --json $OUT/acc-$n.json > /dev/null 2>$OUT/acc-$n.err; echo "$f rc=$?" >> $OUT/accuracy.txt
done
date -u +"bench3 end %FT%TZ"; uptime
