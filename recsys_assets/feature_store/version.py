"""What the code location needs of the Feast definitions to define its assets, without importing Feast (seconds
of every run's start): the definitions' code version and the batch views, which read the dbt tables of the same
names.

`definitions.py` builds the Feast objects with them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

BATCH_VIEWS = ("user_rating_stats", "parent_asin_rating_stats")


def definitions_digest() -> str:
    """The Feast objects' modules (their sources described in offline.py) and the contract they follow."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for path in (here / "definitions.py", here / "offline.py", here.parent / "feature_contract.py"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# The code version of the definitions: Feast objects built from these modules are applied under it.
DEFINITIONS_VERSION = definitions_digest()
