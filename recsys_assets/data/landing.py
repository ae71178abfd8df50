"""Landing zones: where daily review files and the item catalogue arrive.

A landing zone lists its files with a fingerprint (changes when a file is replaced) and reads them
as Arrow tables. The local folder and the GCS bucket share this interface; callers never branch on it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from recsys_assets.data.schema import ITEMS_FILE, day_of_review_file, review_file_name


class LandingZone(Protocol):
    def list_files(self) -> dict[str, str]:
        """File name -> fingerprint, for every file in the zone."""

    def read_parquet(self, name: str) -> pa.Table: ...

    def write_parquet(self, name: str, table: pa.Table) -> None: ...


def review_days(files: dict[str, str]) -> list[date]:
    """The days that have a review file, in order."""
    return sorted(d for d in map(day_of_review_file, files) if d is not None)


def read_review_day(zone: LandingZone, day: date) -> pa.Table:
    return zone.read_parquet(review_file_name(day))


def read_items(zone: LandingZone) -> pa.Table:
    return zone.read_parquet(ITEMS_FILE)


@dataclass
class LocalLandingZone:
    path: Path

    def list_files(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        files = {}
        for entry in self.path.iterdir():
            if entry.is_file() and entry.suffix == ".parquet":
                stat = entry.stat()
                files[entry.name] = f"{stat.st_size}:{stat.st_mtime_ns}"
        return files

    def read_parquet(self, name: str) -> pa.Table:
        return pq.read_table(self.path / name)

    def write_parquet(self, name: str, table: pa.Table) -> None:
        # Write beside, then rename: a sensor never sees a half-written file.
        self.path.mkdir(parents=True, exist_ok=True)
        partial = self.path / f".{name}.partial"
        pq.write_table(table, partial, compression="zstd")
        partial.replace(self.path / name)


@dataclass
class GCSLandingZone:
    bucket: str
    prefix: str = "landing/"
    project: str | None = None

    def _bucket(self):
        from google.cloud import storage  # imported lazily: only the gcp target needs it

        return storage.Client(project=self.project).bucket(self.bucket)

    def list_files(self) -> dict[str, str]:
        files = {}
        for blob in self._bucket().client.list_blobs(self.bucket, prefix=self.prefix):
            name = blob.name[len(self.prefix) :]
            if name.endswith(".parquet") and "/" not in name:
                files[name] = f"{blob.size}:{blob.generation}"
        return files

    def read_parquet(self, name: str) -> pa.Table:
        data = self._bucket().blob(self.prefix + name).download_as_bytes()
        return pq.read_table(io.BytesIO(data))

    def write_parquet(self, name: str, table: pa.Table) -> None:
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        self._bucket().blob(self.prefix + name).upload_from_string(
            sink.getvalue(), content_type="application/octet-stream"
        )
