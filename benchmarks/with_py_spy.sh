#!/usr/bin/env bash
# Run a command and sample where its processes spend their time: after DELAY seconds, py-spy records the command and
# every process under it for DURATION seconds into OUT, idle stacks too (a process waiting on its loader or on the GPU
# shows where it waits): collapsed stacks, one line per distinct stack with its count of samples, each rooted at its
# process. The command then runs on to its end. Without py-spy, or where it may not read other processes (ptrace), the
# command runs alone and a line says so.
#
#   bash benchmarks/with_py_spy.sh 60 60 py_spy.txt python3 benchmarks/reproduce.py STUDY.yaml --jobs 8
#   grep -c "dis.py" py_spy.txt   # then, e.g., sum the samples of the stacks through DIS's sampler
set -uo pipefail
if (($# < 4)); then
    echo "usage: $0 DELAY DURATION OUT COMMAND..." >&2 && exit 2
fi
delay=$1 duration=$2 out=$3
shift 3
"$@" &
pid=$!
if command -v py-spy >/dev/null; then
    sleep "$delay"
    py-spy record --pid "$pid" --subprocesses --idle --nonblocking --rate 20 --duration "$duration" --format raw \
        --output "$out" >/dev/null 2>"$out.log" || echo "py-spy could not sample (see $out.log)" >&2
else
    echo "py-spy is not installed: $* runs without sampling" >&2
fi
wait "$pid"
