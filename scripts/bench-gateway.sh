#!/usr/bin/env bash
# Benchmark of `rampart gateway` (see scripts/bench_gateway.py). Installs the tools the
# same way scripts/test.sh does, builds the release binary, and prints throughput and
# ratios against moto_server and `rampart put/get`, all measured in this run.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.test-tools"
if [ ! -x "$TOOLS/venv/bin/moto_server" ] || [ ! -x "$TOOLS/venv/bin/aws" ]; then
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]>=5,<6" boto3 "awscli>=1.32,<2"
fi
cargo build --release -p rampart
exec "$TOOLS/venv/bin/python" scripts/bench_gateway.py --rampart "${CARGO_TARGET_DIR:-target}/release/rampart" \
  --aws "$TOOLS/venv/bin/aws" --moto "$TOOLS/venv/bin/moto_server" "$@"
