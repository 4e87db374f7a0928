"""One call to save a model safely, one to load it back: safetensors + manifest + signature + encryption.

``save_secure(state_dict, path, key=..., signing_key=...)`` writes a folder::

    path/
      weights.safetensors(.enc)   the tensors; AES-256-GCM encrypted when a key is given
      manifest.json               format, SHA-256 of every file, metadata, encryption settings
      manifest.sig                "<algorithm> <hex signature>" of manifest.json's exact bytes

``load_secure(path, key=..., verify_key=...)`` checks everything before it trusts anything:
the signature, then that the folder holds exactly the files the manifest lists, then each
file's SHA-256, then decrypts (the name and version are bound in as associated data), then
parses the tensors. Any failure raises IntegrityError with what failed.

The industrial version of the manifest-and-signature idea is OpenSSF model signing
(sigstore): the same manifest of file hashes, signed with keys tied to an identity and logged
in a public transparency log.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch

from course_lib.files import write_durably
from course_lib.hardening.crypto import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
    decrypt,
    encrypt,
    sha256_hex,
    sign,
    verify,
)
from course_lib.hardening.serialization import IntegrityError

__all__ = ["save_secure", "load_secure", "FORMAT", "MANIFEST", "SIGNATURE"]

FORMAT = "course-secure-model/1"
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"


def _associated_data(metadata: dict) -> bytes:
    """What a ciphertext is bound to: the model's name and version."""
    return f"{metadata.get('name', 'model')}@{metadata.get('version', '0')}".encode()


def save_secure(
    state_dict: dict[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    key: bytes | None = None,
    signing_key: bytes | Ed25519PrivateKey | None = None,
    metadata: dict | None = None,
) -> Path:
    """Save ``state_dict`` as a folder at ``path``: safetensors, encrypted if ``key``, signed if ``signing_key``.

    ``metadata`` (JSON values) is stored in the manifest; its "name" and "version" are bound to
    the ciphertext. The folder is written next to ``path`` under a temporary name and renamed
    into place, so a crash never leaves a half-written model at ``path``.
    """
    from safetensors.torch import save

    metadata = dict(metadata or {})
    weights = save({k: v.detach().contiguous() for k, v in state_dict.items()})
    if key is not None:
        name, content = "weights.safetensors.enc", encrypt(weights, key, _associated_data(metadata))
    else:
        name, content = "weights.safetensors", weights
    manifest = {
        "format": FORMAT,
        "files": {name: sha256_hex(content)},
        "encryption": "AES-256-GCM" if key is not None else None,
        "associated_data": _associated_data(metadata).decode() if key is not None else None,
        "metadata": metadata,
    }
    files = {name: content, MANIFEST: json.dumps(manifest, indent=1, sort_keys=True).encode()}
    if signing_key is not None:
        algorithm, signature = sign(files[MANIFEST], signing_key)
        files[SIGNATURE] = f"{algorithm} {signature.hex()}\n".encode()
    return _write_folder_atomically(Path(path), files)


def _write_folder_atomically(path: Path, files: dict[str, bytes]) -> Path:
    staging = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    for name, content in files.items():
        write_durably(staging / name, content)  # on disk before the rename makes it visible
    if path.exists():  # keep the old folder until the new one is in place
        retired = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(path, retired)
        os.rename(staging, path)
        shutil.rmtree(retired)
    else:
        os.rename(staging, path)
    return path


def load_secure(
    path: str | os.PathLike,
    *,
    key: bytes | None = None,
    verify_key: bytes | Ed25519PublicKey | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, metadata)`` of a folder written by save_secure, after checking all of it.

    Raises:
        IntegrityError: unknown format; a signature that is missing, unexpected or wrong; a
            file missing, extra or changed; a wrong or missing key; truncated or damaged data.
    """
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise IntegrityError(
            f"{path} is not a model saved by save_secure: no {MANIFEST} (unknown format)"
        )
    raw = (path / MANIFEST).read_bytes()
    _check_signature(path, raw, verify_key)
    manifest = _parse_manifest(raw)
    listed = set(manifest["files"])
    present = {p.name for p in path.iterdir()} - {MANIFEST, SIGNATURE}
    if present != listed:
        raise IntegrityError(
            f"{path.name}: files not in the manifest {sorted(present - listed)}, "
            f"files missing {sorted(listed - present)}"
        )
    contents = {}
    for name, expected in manifest["files"].items():
        contents[name] = (path / name).read_bytes()
        if sha256_hex(contents[name]) != expected:
            raise IntegrityError(f"{name} was changed: its SHA-256 is not the one in the manifest")
    weights = _open_weights(manifest, contents, key)
    return weights, manifest["metadata"]


def _check_signature(path: Path, raw: bytes, verify_key) -> None:
    signature_file = path / SIGNATURE
    if verify_key is None:
        if signature_file.exists():
            raise IntegrityError(
                f"{path.name} is signed: pass verify_key to check the signature before loading"
            )
        return
    if not signature_file.exists():
        raise IntegrityError(
            f"{path.name} is not signed, but a verify_key was given: refusing an unsigned model"
        )
    text = signature_file.read_bytes()
    try:
        algorithm, hex_signature = text.decode("ascii").split()
        signature = bytes.fromhex(hex_signature)
    except ValueError:
        raise IntegrityError(f"{SIGNATURE} is malformed") from None
    # one spelling only: no altered copy passes
    if text != f"{algorithm} {signature.hex()}\n".encode():
        raise IntegrityError(f"{SIGNATURE} is malformed")
    verify(raw, algorithm, signature, verify_key)


def _parse_manifest(raw: bytes) -> dict:
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IntegrityError(f"{MANIFEST} is not valid JSON: damaged or truncated") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IntegrityError(f"unknown format in {MANIFEST}: expected {FORMAT!r}")
    if not isinstance(manifest.get("files"), dict) or len(manifest["files"]) != 1:
        raise IntegrityError(f"{MANIFEST} must list exactly one weights file")
    return manifest


def _open_weights(
    manifest: dict, contents: dict[str, bytes], key: bytes | None
) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    ((name, content),) = contents.items()
    if manifest.get("encryption") == "AES-256-GCM":
        if key is None:
            raise IntegrityError(f"{name} is encrypted: pass the key (see load_key)")
        content = decrypt(content, key, _associated_data(manifest["metadata"]))
    elif manifest.get("encryption") is not None:
        raise IntegrityError(f"unknown encryption {manifest['encryption']!r}")
    elif key is not None:
        raise IntegrityError(
            f"{name} is not encrypted, but a key was given: refusing a downgraded model"
        )
    try:
        return load(content)
    except Exception as error:  # safetensors raises its own error types for damaged headers
        raise IntegrityError(f"{name} is not a valid safetensors payload: {error}") from None
