"""Versioned Qdrant collections behind aliases, through qdrant-client, locally or against a server.

Every build is a new collection (`<alias>__<version>`); `check` must pass before `point_alias` moves the
alias to it, and the previous collection stays until it is retired.

Local mode (qdrant-client `path=`) allows one client per folder, so each collection lives in its own
folder (written once by the build, never touched again), the aliases in `aliases.json` (replaced
atomically), and every reader opens a private copy of the folder: any number of Serve replicas and a
concurrent rebuild never share an open folder. With a server URL the same calls use Qdrant's own
collections and aliases.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient, models

ID_FIELD = "item_id"
_NAME = re.compile(r"[^A-Za-z0-9_-]")


def collection_name(alias: str, version: str) -> str:
    return f"{alias}__{_NAME.sub('-', version)}"


@dataclass(frozen=True)
class IndexCheck:
    count: int
    expected: int
    probes: int
    found_self: int  # probes whose own item came back as the nearest neighbour (score ~ 1)

    @property
    def passed(self) -> bool:
        return self.count == self.expected and self.found_self == self.probes

    def as_dict(self) -> dict:
        return {"count": self.count, "expected": self.expected, "probes": self.probes,
                "found_self": self.found_self, "passed": self.passed}


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class IndexReader:
    """Nearest items of one collection. Local mode: a private copy, removed on close."""

    def __init__(self, client: QdrantClient, collection: str, private_dir: str | None = None):
        self.client, self.collection, self._private_dir = client, collection, private_dir
        self._lock = threading.Lock()  # local mode's engine is not thread-safe

    def search(self, vector: np.ndarray, limit: int) -> list[tuple[str, float]]:
        with self._lock:
            hits = self.client.query_points(self.collection, query=np.asarray(vector, np.float32).tolist(),
                                            limit=limit, with_payload=[ID_FIELD]).points
        return [(h.payload[ID_FIELD], float(h.score)) for h in hits]

    def close(self) -> None:
        self.client.close()
        if self._private_dir:
            shutil.rmtree(self._private_dir, ignore_errors=True)


class VectorIndex:
    def __init__(self, path: Path | None = None, url: str | None = None, api_key: str | None = None):
        if (path is None) == (url is None):
            raise ValueError("give exactly one of path (local mode) or url (Qdrant server)")
        self.path, self.url, self.api_key = (Path(path) if path else None), url, api_key

    @classmethod
    def open(cls, path: Path | None, url: str | None, api_key: str | None = None) -> VectorIndex:
        """The Qdrant server at `url` (with its API key), else local mode under `path`."""
        if url:
            return cls(url=url, api_key=api_key)
        return cls(path=path)

    @property
    def local(self) -> bool:
        return self.path is not None

    # -- clients -------------------------------------------------------------------------------------
    def _folder(self, collection: str) -> Path:
        return self.path / "collections" / collection

    def _client(self, collection: str | None = None) -> QdrantClient:
        if self.local:
            return QdrantClient(path=str(self._folder(collection)))
        return QdrantClient(url=self.url, api_key=self.api_key)

    # -- building ------------------------------------------------------------------------------------
    def build(self, alias: str, version: str, ids: list[str], vectors: np.ndarray, batch: int = 1024) -> str:
        """A new collection of unit-normalised vectors (cosine), payload `item_id`; replaces a collection of
        the same name (a re-run of the same build), never one an alias points to."""
        name = collection_name(alias, version)
        if name in self.aliases().values():
            raise ValueError(f"{name} is what an alias points to now: build a new version instead")
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.local:
            shutil.rmtree(self._folder(name), ignore_errors=True)
            self._folder(name).parent.mkdir(parents=True, exist_ok=True)
        client = self._client(name)
        try:
            if client.collection_exists(name):
                client.delete_collection(name)
            client.create_collection(name, vectors_config=models.VectorParams(size=vectors.shape[1],
                                                                              distance=models.Distance.COSINE))
            for start in range(0, len(ids), batch):
                chunk = slice(start, start + batch)
                client.upsert(name, wait=True, points=models.Batch(
                    ids=list(range(start + 1, start + 1 + len(ids[chunk]))), vectors=vectors[chunk].tolist(),
                    payloads=[{ID_FIELD: i} for i in ids[chunk]]))
        finally:
            client.close()
        return name

    def check(self, collection: str, ids: list[str], vectors: np.ndarray, probes: int = 20, seed: int = 0
              ) -> IndexCheck:
        """Count matches; for sampled items the stored point carries the item's id and vector, and a query
        with that vector finds a point at cosine ~ 1 first (itself, or an item with an identical vector)."""
        reader = self.open_reader(collection)
        try:
            client = reader.client
            count = client.count(collection, exact=True).count
            rng = np.random.default_rng(seed)
            sample = rng.choice(len(ids), size=min(probes, len(ids)), replace=False) if len(ids) else []
            found = 0
            for i in sample:
                stored = client.retrieve(collection, ids=[int(i) + 1], with_payload=True, with_vectors=True)
                hits = reader.search(vectors[i], limit=1)
                if not stored or not hits or stored[0].payload.get(ID_FIELD) != ids[i]:
                    continue
                built = _unit(vectors[i])
                if float(np.dot(_unit(np.asarray(stored[0].vector, np.float32)), built)) > 0.999 and hits[0][1] > 0.999:
                    found += 1
            return IndexCheck(count=count, expected=len(ids), probes=len(sample), found_self=found)
        finally:
            reader.close()

    # -- aliases -------------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        if self.local:
            path = self.path / "aliases.json"
            return json.loads(path.read_text()) if path.exists() else {}
        client = self._client()
        try:
            return {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
        finally:
            client.close()

    def resolve(self, alias: str) -> str | None:
        return self.aliases().get(alias)

    def point_alias(self, alias: str, collection: str) -> str | None:
        """Move `alias` to `collection` in one step; returns the collection it pointed to before."""
        previous = self.resolve(alias)
        if self.local:
            if not self._folder(collection).exists():
                raise ValueError(f"no collection {collection}")
            table = {**self.aliases(), alias: collection}
            fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".aliases-")
            with os.fdopen(fd, "w") as f:
                json.dump(table, f, indent=2, sort_keys=True)
            os.replace(tmp, self.path / "aliases.json")
            return previous
        ops = [models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection,
                                                                           alias_name=alias))]
        if previous:
            ops.insert(0, models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        client = self._client()
        try:
            client.update_collection_aliases(change_aliases_operations=ops)  # one atomic request
        finally:
            client.close()
        return previous

    def collections(self, alias: str) -> list[str]:
        prefix = f"{alias}__"
        if self.local:
            folder = self.path / "collections"
            names = [p.name for p in folder.iterdir()] if folder.exists() else []
        else:
            client = self._client()
            try:
                names = [c.name for c in client.get_collections().collections]
            finally:
                client.close()
        return sorted(n for n in names if n.startswith(prefix))

    def retire(self, alias: str, keep: set[str]) -> list[str]:
        """Drop the collections of `alias` that are neither in `keep` nor what an alias points to."""
        live = set(self.aliases().values()) | keep
        gone = [c for c in self.collections(alias) if c not in live]
        for name in gone:
            if self.local:
                shutil.rmtree(self._folder(name), ignore_errors=True)
            else:
                client = self._client()
                try:
                    client.delete_collection(name)
                finally:
                    client.close()
        return gone

    # -- reading -------------------------------------------------------------------------------------
    def open_reader(self, collection: str) -> IndexReader:
        if not self.local:
            return IndexReader(self._client(), collection)
        source = self._folder(collection)
        if not source.exists():
            raise FileNotFoundError(f"no collection {collection} under {self.path}")
        private = tempfile.mkdtemp(prefix=f"qdrant-{collection}-")
        target = Path(private) / collection
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(".lock"))
        return IndexReader(QdrantClient(path=str(target)), collection, private_dir=private)
