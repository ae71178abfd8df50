"""The image's requirements from `uv export` (stdin -> stdout), for one torch variant.

uv.lock takes torch from this machine's CPU wheel, which `uv export` writes as a bare `file:///...whl` line;
in the image torch (and, for CUDA, fbgemm) come from PyTorch's index for the variant, at the locked version.

    uv export --frozen --no-dev --no-emit-project --no-hashes --format requirements-txt \
        | python deploy/docker/requirements.py VARIANT [--overrides FILE]

VARIANT: `cpu` or `cuNNN` (PyTorch's index), or `pypi` (PyPI's own torch build, no local version: what a
resolve uses where PyTorch's index is out of reach). `--overrides FILE` writes the uv overrides that keep
torchrec's CUDA-only `fbgemm-gpu` requirement out of a CPU image (as `[tool.uv] override-dependencies` does).
"""

from __future__ import annotations

import re
import sys
from urllib.parse import unquote

# `file:///opt/wheels/torch-2.13.0+cpu-cp311-...whl` (bare, as uv 0.13 writes it) or `torch @ file://...`.
LOCAL_TORCH = re.compile(r"^(?:torch\s*@\s*)?file://\S*/torch-(?P<version>[0-9][0-9.]*)(?:\+\w+)?-[^\s]*\.whl")
FBGEMM_CPU = re.compile(r"^fbgemm-gpu-cpu==(?P<version>\S+)")
FBGEMM_GPU = re.compile(r"^fbgemm-gpu==")
VARIANT = re.compile(r"^(cpu|cu\d+|pypi)$")


def transform(lines: list[str], variant: str) -> tuple[list[str], list[str]]:
    """(requirements, overrides) for `variant`. Raises when the export has no torch line it can point at the
    variant, so a change in uv's export format fails the build instead of installing something else."""
    if not VARIANT.match(variant):
        raise ValueError(f"variant must be cpu, cuNNN or pypi, got {variant!r}")
    out, torch_version, fbgemm_version = [], None, None
    for line in lines:
        line = line.rstrip("\n")
        torch = LOCAL_TORCH.match(unquote(line.strip()))
        if torch:
            torch_version = torch["version"]
            out.append(f"torch=={torch_version}" + ("" if variant == "pypi" else f"+{variant}"))
            continue
        if FBGEMM_GPU.match(line):  # the lock keeps torchrec's CUDA requirement only under a `never` marker
            continue
        fbgemm = FBGEMM_CPU.match(line)
        if fbgemm and variant.startswith("cu"):
            fbgemm_version = fbgemm["version"]
            out.append(f"fbgemm-gpu=={fbgemm_version}")
            continue
        out.append(line)
    if torch_version is None:
        raise ValueError("the export has no local torch wheel line (file:///...torch-<version>...whl): "
                         "uv's export format or pyproject's torch source changed; update deploy/docker/requirements.py")
    if variant.startswith("cu"):
        if fbgemm_version is None:
            raise ValueError("the export has no fbgemm-gpu-cpu pin to turn into the CUDA build")
        overrides = [f"fbgemm-gpu=={fbgemm_version}"]
    else:
        overrides = ["fbgemm-gpu ; sys_platform == 'never'"]
    return out, overrides


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    requirements, overrides = transform(sys.stdin.readlines(), argv[0])
    if "--overrides" in argv:
        with open(argv[argv.index("--overrides") + 1], "w") as f:
            f.write("\n".join(overrides) + "\n")
    sys.stdout.write("\n".join(requirements) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
