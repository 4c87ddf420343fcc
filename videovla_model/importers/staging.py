"""Writing a whole output folder or nothing: conversions build it next to its destination and rename it at the end."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ConversionError(ValueError):
    """A dataset or bag that cannot be converted; the message names the file, field, topic or time."""


@contextmanager
def staged_folder(destination: Path) -> Iterator[Path]:
    """Yields an empty folder beside `destination` that becomes `destination` only when the block succeeds.

    On any error the folder is removed, so a refused or interrupted conversion leaves nothing behind.
    """
    destination = Path(destination)
    if destination.exists():
        raise ConversionError(f"{destination} already exists; choose a new output folder (nothing was written)")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.incoming-", dir=destination.parent))
    try:
        yield staging
        staging.rename(destination)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
