#!/usr/bin/env bash
# Installs the VS Code extension's dependencies exactly as locked and runs its build and tests.
#
# Called by the repository's scripts/test and .ci/run. The integration tests start a real `nbd`
# (NBD_BIN, else <repo>/.venv/bin/nbd) and `nbctl` (NBCTL_BIN, else <repo>/.venv/bin/nbctl), so the
# Python venv must exist first. With --package, also builds nbd-vscode.vsix.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

if ! command -v npm >/dev/null 2>&1; then
  echo "clients/vscode: npm is not installed; install Node.js 20 or newer with npm" >&2
  exit 1
fi

npm ci --no-audit --no-fund --loglevel=error
npm test
if [[ "${1:-}" == "--package" ]]; then
  npm run package
fi
