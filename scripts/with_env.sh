#!/usr/bin/env bash
# Runs one command inside the workspace environment (see scripts/env.sh).
set -eo pipefail
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec "$@"
