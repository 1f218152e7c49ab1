#!/usr/bin/env bash
# the rest of #23's benchmark run, after bench.sh's remeasures met the apply() instance bug (fixed)
set -u
cd . && . .venv/bin/activate
OUT=results/compute-2026-12-02
R="--seeds 1 --rounds 4 --seconds 4 --warmup 5"
while pgrep -f "benchmarks/repro.py configs/branchy" > /dev/null; do sleep 5; done
date -u +"bench2 start %FT%TZ"; uptime
for name in encoder-none/encoder-s1 quickstart-none/quickstart-s1; do
  python benchmarks/remeasure.py $OUT/$name/tuned.yaml --rounds 4 --seconds 4 --warmup 5 --json $OUT/$(dirname $name)-remeasure.json > $OUT/$(dirname $name)-remeasure.txt 2>&1
done
python benchmarks/repro.py configs/encoder.yaml $R --search-arg=--budget --search-arg=6m --search-arg=--accuracy-tolerance --search-arg=0.05 --tag=-tol --out $OUT/encoder-tol > $OUT/encoder-tol.txt 2>&1
python benchmarks/repro.py configs/quickstart.yaml $R --search-arg=--accuracy-tolerance --search-arg=0.05 --tag=-tol --out $OUT/quickstart-tol > $OUT/quickstart-tol.txt 2>&1
( t0=$(date +%s); python -m tuner search --model $OUT/encoder.keras --batch-size 8 --accuracy-tolerance 0.05 --budget 8m --seed 1 --output $OUT/modelfile-tol/tuned.yaml > $OUT/modelfile-tol.txt 2>&1; echo "rc $? wall $(( $(date +%s) - t0 )) s" >> $OUT/modelfile-tol.txt )
python benchmarks/remeasure.py $OUT/modelfile-tol/tuned.yaml --rounds 4 --seconds 4 --warmup 5 --json $OUT/modelfile-tol-remeasure.json > $OUT/modelfile-tol-remeasure.txt 2>&1
python benchmarks/repro.py configs/sequential_map.yaml $R --out $OUT/seqmap-none > $OUT/seqmap-none.txt 2>&1
rm -f $OUT/accuracy.txt
for f in $OUT/*/*/tuned.yaml $OUT/modelfile-tol/tuned.yaml; do
  [ -f "$f" ] || continue
  n=$(echo $f | tr '/' '_')
  python benchmarks/accuracy_check.py "$f" --json $OUT/acc-$n.json > /dev/null 2>$OUT/acc-$n.err; echo "$f rc=$?" >> $OUT/accuracy.txt
done
date -u +"bench2 end %FT%TZ"; uptime
