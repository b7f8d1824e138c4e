#!/bin/sh
# Builds bench/.venv (the benchmark's own packages, never the project venv), installs wrk when
# missing, then runs bench/run.py. Settings: ROUNDS=3 DURATION=10s (defaults); QUICK=1 for a
# 1-round, 3-second check. See bench/run.py for the rest.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3

if ! command -v wrk >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

if [ ! -x "$here/.venv/bin/python" ]; then
    "$python" -m venv "$here/.venv"
fi
stamp="$here/.venv/.bench-requirements"
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
    "$here/.venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$stamp"
fi

# Many connections: wrk and the servers need more than the usual 1024 descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "$here/.venv/bin/python" "$here/run.py" "$@"
