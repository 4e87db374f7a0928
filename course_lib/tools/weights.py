"""``course weights fetch resnet18``: the one download the course offers, and only on request.

Nothing in the course downloads at run time. A learner who wants torchvision's resnet18 with
its ImageNet weights (for their own photos) asks for it once with this command. The file goes
to a temporary name next to its place in torch's cache; it is put in place only when its size
and full SHA-256 are the pinned ones (``course_lib.transfer``), so a wrong or broken download
never lands in the cache. After that the course uses the cached file, offline.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

CHUNK_BYTES = 1 << 20


class FetchError(RuntimeError):
    """The download failed or was not the pinned file; nothing was put in the cache."""


def fetch_resnet18_imagenet(*, url: str | None = None, progress: bool = True) -> Path:
    """Download resnet18's ImageNet weights into torch's cache (if not there), checked; return the path."""
    from torchvision.models import ResNet18_Weights

    from course_lib import transfer

    destination = transfer.imagenet_weights_path()
    if destination.exists():
        transfer.load_backbone("resnet18", "imagenet")  # checks size and hash; raises if wrong
        return destination
    return download_checked(
        url or ResNet18_Weights.IMAGENET1K_V1.url,
        destination,
        size=transfer.RESNET18_IMAGENET_SIZE,
        sha256=transfer.RESNET18_IMAGENET_SHA256,
        progress=progress,
    )


def download_checked(
    url: str, destination: Path, *, size: int, sha256: str, progress: bool = True
) -> Path:
    """Download ``url`` to ``destination`` only if it has exactly ``size`` bytes and this SHA-256."""
    from tqdm.auto import tqdm

    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    digest, received = hashlib.sha256(), 0
    try:
        with (
            urllib.request.urlopen(url, timeout=30) as response,
            partial.open("wb") as file,
            tqdm(
                total=size, unit="B", unit_scale=True, desc=destination.name, disable=not progress
            ) as bar,
        ):
            while chunk := response.read(CHUNK_BYTES):
                received += len(chunk)
                if received > size:
                    raise FetchError(f"{url} sent more than the expected {size:,} bytes")
                digest.update(chunk)
                file.write(chunk)
                bar.update(len(chunk))
        if received != size:
            raise FetchError(
                f"{url} sent {received:,} bytes, expected {size:,}: the download was cut short"
            )
        if digest.hexdigest() != sha256:
            raise FetchError(
                f"{url} is not the pinned file (SHA-256 {digest.hexdigest()[:16]}..., "
                f"expected {sha256[:16]}...): nothing was saved"
            )
        os.replace(partial, destination)
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"could not download {url}: {getattr(exc, 'reason', exc)}") from None
    finally:
        partial.unlink(missing_ok=True)
    return destination
