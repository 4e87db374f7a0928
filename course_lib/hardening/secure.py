"""One call to save a model safely, one to load it back: safetensors + manifest + signature + encryption.

``save_secure(state_dict, path, kms=..., signing_key=...)`` writes a folder::

    path/
      weights.safetensors(.enc)   the tensors; AES-256-GCM encrypted when a key or a KMS is given
      data_key.json               with a KMS only: the KEK's id and the wrapped data key
      manifest.json               format, SHA-256 of the weights file, metadata, encryption settings
      manifest.sig                "<algorithm> <hex signature>" of manifest.json's exact bytes

``load_secure(path, kms=..., verify_key=..., expected=...)`` checks everything before it trusts
anything: the signature, then that the signed metadata is the artefact asked for
(``expected``, e.g. ``{"name": "digits", "version": 3}``), then that the folder holds exactly
the files the manifest lists, then each file's SHA-256, then decrypts (the name and version
are bound in as associated data), then parses the tensors. Any failure raises IntegrityError
with what failed. It **fails closed**: without a ``verify_key`` it refuses, unless the caller
opts out with ``allow_unsigned=True``, which warns what it skips. A signature says "signed by
this key", not "the model I asked for": without ``expected``, another artefact signed by the
same key (an older version, another model) put in place of this one loads.
:func:`verified_metadata` checks the signature and returns the signed metadata only.

Encryption comes in two forms. ``key=`` encrypts with one key the caller holds (it must then
live somewhere safer than the disk it protects). ``kms=`` uses envelope encryption
(:mod:`course_lib.hardening.envelope`): a fresh data key per folder, stored only wrapped by a
key-encryption key that stays in the KMS; :func:`rotate_data_key` re-wraps it under the KMS's
current KEK without touching the weights (``data_key.json`` is therefore outside the signed
manifest; the KMS's authenticated wrapping is what protects it).

:func:`sign_file` and :func:`verify_file` do the same for a single file (an ONNX export): a
detached signature ``<file>.sig`` over the file's exact bytes.

The industrial version of the manifest-and-signature idea is OpenSSF model signing
(sigstore): the same manifest of file hashes, signed with keys tied to an identity and logged
in a public transparency log.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

import torch

from course_lib.files import write_atomically, write_durably
from course_lib.hardening.crypto import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
    decrypt,
    encrypt,
    sha256_hex,
    sign,
    verify,
)
from course_lib.hardening.envelope import SimulatedKMS, open_envelope, rewrap, seal_envelope
from course_lib.hardening.serialization import IntegrityError

__all__ = [
    "save_secure",
    "load_secure",
    "rotate_data_key",
    "verified_metadata",
    "sign_file",
    "verify_file",
    "FORMAT",
    "MANIFEST",
    "SIGNATURE",
    "KEY_FILE",
    "UnsignedModelWarning",
]

FORMAT = "course-secure-model/1"
MANIFEST, SIGNATURE, KEY_FILE = "manifest.json", "manifest.sig", "data_key.json"
DIRECT, ENVELOPE = "AES-256-GCM", "AES-256-GCM envelope"


def _associated_data(metadata: dict) -> bytes:
    """What a ciphertext is bound to: the model's name and version."""
    return f"{metadata.get('name', 'model')}@{metadata.get('version', '0')}".encode()


def save_secure(
    state_dict: dict[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    key: bytes | None = None,
    kms: SimulatedKMS | None = None,
    signing_key: bytes | Ed25519PrivateKey | None = None,
    metadata: dict | None = None,
) -> Path:
    """Save ``state_dict`` as a folder at ``path``: safetensors, signed if ``signing_key``.

    Encrypted with ``key`` (one key the caller holds) or, better, with ``kms`` (envelope
    encryption: a new data key wrapped by the KMS's current KEK), never both.
    ``metadata`` (JSON values) is stored in the manifest; its "name" and "version" are bound to
    the ciphertext. The folder is written next to ``path`` under a temporary name and renamed
    into place, so a crash never leaves a half-written model at ``path``.
    """
    from safetensors.torch import save

    if key is not None and kms is not None:
        raise ValueError("pass key or kms, not both")
    metadata = dict(metadata or {})
    weights = save({k: v.detach().contiguous() for k, v in state_dict.items()})
    context = _associated_data(metadata)
    files, encryption = {}, None
    if kms is not None:
        content, key_record = seal_envelope(weights, kms, context)
        name, encryption = "weights.safetensors.enc", ENVELOPE
        files[KEY_FILE] = _key_file_bytes(key_record)
    elif key is not None:
        name, content, encryption = (
            "weights.safetensors.enc",
            encrypt(weights, key, context),
            DIRECT,
        )
    else:
        name, content = "weights.safetensors", weights
    manifest = {
        "format": FORMAT,
        "files": {name: sha256_hex(content)},
        "encryption": encryption,
        "associated_data": context.decode() if encryption else None,
        "metadata": metadata,
    }
    files[name] = content
    files[MANIFEST] = json.dumps(manifest, indent=1, sort_keys=True).encode()
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


def _key_file_bytes(key_record: dict) -> bytes:
    return (json.dumps(key_record, indent=1, sort_keys=True) + "\n").encode()


def load_secure(
    path: str | os.PathLike,
    *,
    key: bytes | None = None,
    kms: SimulatedKMS | None = None,
    verify_key: bytes | Ed25519PublicKey | None = None,
    allow_unsigned: bool = False,
    expected: dict | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, metadata)`` of a folder written by save_secure, after checking all of it.

    Verifies by default: without ``verify_key`` it refuses to load. ``allow_unsigned=True``
    loads an *unsigned* folder (one you wrote yourself, in a test) and warns that nothing then
    says who wrote it; a signed folder always needs its ``verify_key``. ``expected`` (optional,
    e.g. ``{"name": "digits", "version": 3}``): each field must equal the signed metadata's,
    so that another artefact signed by the same key, put in this folder's place, is refused.

    Raises:
        IntegrityError: unknown format; no verify_key; a signature that is missing,
            unexpected or wrong; metadata other than ``expected``; a file missing, extra or
            changed; a wrong or missing key, an unknown KEK id; truncated or damaged data.
    """
    path = Path(path)
    manifest = _verified_manifest(path, verify_key, allow_unsigned, expected)
    listed = set(manifest["files"])
    unlisted = {MANIFEST, SIGNATURE} | ({KEY_FILE} if manifest["encryption"] == ENVELOPE else set())
    present = {p.name for p in path.iterdir()} - unlisted
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
    if manifest["encryption"] == ENVELOPE:
        if kms is None:
            raise IntegrityError(
                f"{path.name} is envelope-encrypted: pass the kms that wraps its key"
            )
        weights = _open_envelope_weights(path, manifest, contents, kms)
    elif kms is not None:
        raise IntegrityError(
            f"{path.name} is not envelope-encrypted, but a kms was given: refusing a downgraded model"
        )
    else:
        weights = _open_weights(manifest, contents, key)
    return weights, manifest["metadata"]


def verified_metadata(
    path: str | os.PathLike,
    *,
    verify_key: bytes | Ed25519PublicKey | None = None,
    allow_unsigned: bool = False,
    expected: dict | None = None,
) -> dict:
    """The metadata of a save_secure folder, read from its manifest after checking the signature.

    Cheap (no weights are read or decrypted): for listing versions, metrics and lineage from
    what the signer wrote rather than from an unsigned index. Same keys and errors as
    :func:`load_secure`.
    """
    return _verified_manifest(Path(path), verify_key, allow_unsigned, expected)["metadata"]


def _verified_manifest(path: Path, verify_key, allow_unsigned: bool, expected: dict | None) -> dict:
    if verify_key is not None and allow_unsigned:
        raise ValueError("pass verify_key or allow_unsigned=True, not both")
    if not (path / MANIFEST).is_file():
        raise IntegrityError(
            f"{path} is not a model saved by save_secure: no {MANIFEST} (unknown format)"
        )
    raw = (path / MANIFEST).read_bytes()
    _check_signature(path, raw, verify_key, allow_unsigned)
    manifest = _parse_manifest(raw)
    metadata = manifest.get("metadata")
    if not isinstance(metadata, dict):
        raise IntegrityError(f"{MANIFEST} has no metadata object")
    wrong = {
        field: metadata.get(field)
        for field, value in (expected or {}).items()
        if metadata.get(field) != value
    }
    if wrong:
        raise IntegrityError(
            f"folder {path.name!r} holds {wrong}, not the expected {expected}: a validly signed but "
            "different artefact (another model or version) was put in its place"
        )
    return manifest


def _check_signature(path: Path, raw: bytes, verify_key, allow_unsigned: bool) -> None:
    signature_file = path / SIGNATURE
    if verify_key is None:
        if signature_file.exists():
            raise IntegrityError(
                f"{path.name} is signed: pass verify_key to check the signature before loading"
            )
        if not allow_unsigned:
            raise IntegrityError(
                f"{path.name}: no verify_key given, so nothing says who wrote this model: "
                "refusing to load it (pass allow_unsigned=True only for a folder you wrote yourself)"
            )
        warnings.warn(
            f"allow_unsigned=True: {path.name} is loaded WITHOUT a signature check; the hashes "
            "only catch accidents, since whoever could change the weights could rewrite them",
            UnsignedModelWarning,
            stacklevel=3,
        )
        return
    if not signature_file.exists():
        raise IntegrityError(
            f"{path.name} is not signed, but a verify_key was given: refusing an unsigned model"
        )
    _verify_signature_file(signature_file, raw, verify_key)


def _verify_signature_file(signature_file: Path, message: bytes, verify_key) -> None:
    text = signature_file.read_bytes()
    try:
        algorithm, hex_signature = text.decode("ascii").split()
        signature = bytes.fromhex(hex_signature)
    except ValueError:
        raise IntegrityError(f"{signature_file.name} is malformed") from None
    # one spelling only: no altered copy passes
    if text != f"{algorithm} {signature.hex()}\n".encode():
        raise IntegrityError(f"{signature_file.name} is malformed")
    verify(message, algorithm, signature, verify_key)


class UnsignedModelWarning(UserWarning):
    """A model was loaded without checking its signature (``allow_unsigned=True``)."""


def sign_file(path: str | os.PathLike, signing_key: bytes | Ed25519PrivateKey) -> Path:
    """Write a detached signature of the file's exact bytes to ``<path>.sig``; return that path."""
    path = Path(path)
    algorithm, signature = sign(path.read_bytes(), signing_key)
    signature_path = path.with_name(path.name + ".sig")
    write_atomically(signature_path, f"{algorithm} {signature.hex()}\n".encode())
    return signature_path


def verify_file(path: str | os.PathLike, verify_key: bytes | Ed25519PublicKey) -> bytes:
    """The file's bytes, after checking them against ``<path>.sig``; IntegrityError otherwise.

    Returns the bytes it checked, so a caller can use exactly those (a file swapped between
    the check and a second read would slip through otherwise).
    """
    path = Path(path)
    signature_path = path.with_name(path.name + ".sig")
    if not signature_path.is_file():
        raise IntegrityError(f"{path.name} has no detached signature {signature_path.name}")
    content = path.read_bytes()
    try:
        _verify_signature_file(signature_path, content, verify_key)
    except IntegrityError as error:
        if not str(error).startswith("wrong signature"):
            raise
        raise IntegrityError(
            f"wrong signature: {path.name} was changed, or signed by another key"
        ) from None
    return content


def rotate_data_key(path: str | os.PathLike, kms: SimulatedKMS) -> str:
    """Re-wrap the folder's data key under ``kms``'s current KEK version; return its id.

    Only ``data_key.json`` is rewritten: the data key, the weights' ciphertext, the manifest
    and its signature stay byte for byte the same. So a copy made before (a backup) still opens
    while its KEK version exists, and opens with the new ``data_key.json`` even after that
    version is destroyed. Against a leaked data key, save the model again (a fresh data key).
    """
    path = Path(path)
    manifest = _parse_manifest((path / MANIFEST).read_bytes())
    if manifest["encryption"] != ENVELOPE:
        raise ValueError(f"{path.name} is not envelope-encrypted: it has no data key to rotate")
    record = rewrap(_read_key_record(path), kms, _associated_data(manifest["metadata"]))
    write_atomically(path / KEY_FILE, _key_file_bytes(record))
    return record["kek_id"]


def _read_key_record(path: Path) -> dict:
    try:
        record = json.loads((path / KEY_FILE).read_bytes())
    except FileNotFoundError:
        raise IntegrityError(f"{path.name}: {KEY_FILE} is missing: the data key is lost") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IntegrityError(f"{KEY_FILE} is not valid JSON: damaged or truncated") from None
    if not isinstance(record, dict) or not isinstance(record.get("kek_id"), str):
        raise IntegrityError(f"{KEY_FILE} is malformed: no 'kek_id'")
    return record


def _open_envelope_weights(
    path: Path, manifest: dict, contents: dict[str, bytes], kms: SimulatedKMS
) -> dict[str, torch.Tensor]:
    ((name, content),) = contents.items()
    plaintext = open_envelope(
        content, _read_key_record(path), kms, _associated_data(manifest["metadata"])
    )
    return _parse_safetensors(name, plaintext)


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
    ((name, content),) = contents.items()
    if manifest.get("encryption") == DIRECT:
        if key is None:
            raise IntegrityError(f"{name} is encrypted: pass the key (see load_key)")
        content = decrypt(content, key, _associated_data(manifest["metadata"]))
    elif manifest.get("encryption") is not None:
        raise IntegrityError(f"unknown encryption {manifest['encryption']!r}")
    elif key is not None:
        raise IntegrityError(
            f"{name} is not encrypted, but a key was given: refusing a downgraded model"
        )
    return _parse_safetensors(name, content)


def _parse_safetensors(name: str, content: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    try:
        return load(content)
    except Exception as error:  # safetensors raises its own error types for damaged headers
        raise IntegrityError(f"{name} is not a valid safetensors payload: {error}") from None
