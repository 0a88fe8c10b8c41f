#!/usr/bin/env bash
# Tern's pipeline benchmark on loopback (see tern_bench.py for what it measures):
#
#   bench/run.sh [N] [SIZE ...]       whole pipeline, default 20000 messages of 2 KB and 20 KB
#   bench/run.sh sessions [N]         the sender's RSS holding N (2000) sessions to a slow peer
#
# Installs what it needs (scripts/install-deps --bench) and builds the release binaries if
# they are missing. The sink is Postfix's smtp-sink, started through
# /work/shared/bench/sink.sh like the Postfix figures it is compared with; as root it drops
# to the postfix user. Everything stays on 127.0.0.0/8.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps --bench
if [[ ! -x .build/release/tern-sender ]]; then swift build -c release; fi
ulimit -n "$(ulimit -Hn)"
if [[ ${1:-} == sessions ]]; then
    shift
    exec python3 bench/sessions.py "$@"
fi
exec python3 bench/tern_bench.py "$@"
