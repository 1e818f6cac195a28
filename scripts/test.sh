#!/usr/bin/env bash
# Runs every Rampart check and test. The one command a fresh machine needs:
#
#   ./scripts/test.sh
#
# It installs the test endpoints into .test-tools/ (moto_server from PyPI for S3,
# Azurite from npm for Azure Blob) and the S3 clients that drive `rampart gateway` (the
# AWS CLI v1 and boto3, from PyPI), Go and golang.org/x/mod from Debian for the secure log's
# interop test, then runs formatting, lints and the whole test
# suite. Tests that need a server start it themselves on 127.0.0.1 and stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.test-tools"
mkdir -p "$TOOLS"

if [ ! -x "$TOOLS/venv/bin/moto_server" ] || [ ! -x "$TOOLS/venv/bin/aws" ] || ! "$TOOLS/venv/bin/python" -c "import boto3, azure.storage.blob" 2>/dev/null; then
  echo "== installing moto_server (S3 test endpoint), the AWS CLI and boto3 into $TOOLS/venv"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]>=5,<6" boto3 azure-storage-blob "awscli>=1.32,<2"
fi
if [ ! -x "$TOOLS/node/node_modules/.bin/azurite-blob" ]; then
  echo "== installing Azurite (Azure Blob test endpoint) into $TOOLS/node"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/node" 'azurite@3' >/dev/null
fi
# Go's reference tlog code (golang.org/x/mod/sumdb) for the secure log's interop test
# (crates/log/tests/go_interop.rs), from Debian; skipped when already installed.
if ! command -v go >/dev/null 2>&1 || ! dpkg -s golang-golang-x-mod-dev >/dev/null 2>&1; then
  echo "== installing golang-go and golang-golang-x-mod-dev (Debian) for the Go interop test"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends golang-go golang-golang-x-mod-dev
fi
export RAMPART_MOTO_SERVER="$TOOLS/venv/bin/moto_server"
export RAMPART_AZURITE="$TOOLS/node/node_modules/.bin/azurite-blob"
export RAMPART_TEST_PYTHON="$TOOLS/venv/bin/python"
export RAMPART_AWS_CLI="$TOOLS/venv/bin/aws"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== doc tests"
cargo test --workspace --doc
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
