#!/usr/bin/env bash
# The image's dependency step, as deploy/docker/Dockerfile runs it (and tests/test_image.py, with --dry-run):
# the versions uv.lock pins, torch for VARIANT, installed into $VIRTUAL_ENV with uv, dependencies resolved
# (so a lock that no longer resolves on the indexes fails here, not at run time).
#   deploy/docker/install-dependencies.sh VARIANT [more `uv pip install` options, e.g. --dry-run]
# VARIANT: cpu | cuNNN (torch from PyTorch's index) | pypi (torch from PyPI, where PyTorch's index is out of reach)
set -euo pipefail
variant=${1:?usage: $0 cpu|cuNNN|pypi [uv pip install options]}
shift
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
uv export --frozen --no-dev --no-emit-project --no-hashes --format requirements-txt \
  | python3 deploy/docker/requirements.py "$variant" --overrides "$work/overrides.txt" > "$work/requirements.txt"
index=()
if [ "$variant" != pypi ]; then
  # torch==X+cpu exists only on PyTorch's index; the best match across both indexes is what PyTorch documents.
  index=(--extra-index-url "https://download.pytorch.org/whl/${variant}" --index-strategy unsafe-best-match)
fi
uv pip install --no-cache -r "$work/requirements.txt" --overrides "$work/overrides.txt" "${index[@]}" "$@"
