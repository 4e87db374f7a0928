"""`course weights fetch`: a download is put in the cache only when it is the pinned file (no network)."""

import hashlib
import io

import pytest
import torch
from torchvision.models import resnet18

from course_lib import transfer
from course_lib.tools.weights import FetchError, download_checked, fetch_resnet18_imagenet


def served(tmp_path, content: bytes) -> str:
    source = tmp_path / "served.bin"
    source.write_bytes(content)
    return source.as_uri()  # file://: urllib reads it like a download


def test_the_pinned_file_lands_in_place(tmp_path):
    content = b"weights" * 1000
    target = tmp_path / "cache" / "w.pth"
    url = served(tmp_path, content)
    download_checked(
        url, target, size=len(content), sha256=hashlib.sha256(content).hexdigest(), progress=False
    )
    assert target.read_bytes() == content
    assert not list(target.parent.glob("*.partial"))


@pytest.mark.parametrize(
    "size_delta, sha, words",
    [
        (0, "0" * 64, "not the pinned file"),
        (10, None, "cut short"),
        (-10, None, "more than the expected"),
    ],
    ids=["wrong-hash", "short", "long"],
)
def test_anything_else_is_refused_and_nothing_is_left(tmp_path, size_delta, sha, words):
    content = b"weights" * 1000
    target = tmp_path / "cache" / "w.pth"
    expected_sha = sha or hashlib.sha256(content).hexdigest()
    with pytest.raises(FetchError, match=words):
        download_checked(
            served(tmp_path, content),
            target,
            size=len(content) + size_delta,
            sha256=expected_sha,
            progress=False,
        )
    assert not target.exists() and not list(target.parent.glob("*"))


def test_no_network_is_one_sentence(tmp_path):
    with pytest.raises(FetchError, match="could not download"):
        download_checked(
            (tmp_path / "absent").as_uri(),
            tmp_path / "w.pth",
            size=1,
            sha256="0" * 64,
            progress=False,
        )


def test_fetch_then_the_course_uses_the_cached_file(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    torch.save(resnet18(weights=None).state_dict(), buffer)
    content = buffer.getvalue()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(transfer, "RESNET18_IMAGENET_SIZE", len(content))
    monkeypatch.setattr(transfer, "RESNET18_IMAGENET_SHA256", hashlib.sha256(content).hexdigest())
    with pytest.raises(transfer.WeightsUnavailable):
        transfer.load_backbone("resnet18", "imagenet")
    path = fetch_resnet18_imagenet(url=served(tmp_path, content), progress=False)
    assert path == transfer.imagenet_weights_path() and path.read_bytes() == content
    model = transfer.load_backbone("resnet18", "imagenet")
    assert torch.equal(model.fc.weight, torch.load(io.BytesIO(content))["fc.weight"])
    assert (
        fetch_resnet18_imagenet(url="file:///never/used", progress=False) == path
    )  # cached: no download
