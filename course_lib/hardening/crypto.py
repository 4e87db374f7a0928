"""Keys, encryption and signatures, all from the ``cryptography`` package (never hand-rolled).

- Encryption at rest: AES-256-GCM. A fresh random 96-bit nonce for every encryption (never
  reused with the same key), and *associated data* (here the model's name and version) that
  is authenticated but not encrypted: a ciphertext moved to another name or version fails.
- Signing with a shared secret: HMAC-SHA256. Whoever can verify can also sign.
- Public-key signing: Ed25519. Only the private key signs; anyone with the public key verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from course_lib.hardening.serialization import IntegrityError

__all__ = [
    "KEY_ENV",
    "new_key",
    "write_key_file",
    "load_key",
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "sha256_hex",
]

KEY_ENV = "COURSE_MODEL_KEY"  # the environment variable load_key() reads
NONCE_BYTES = 12  # 96 bits, what GCM is designed for
MIN_SECRET_BYTES = 16  # the shortest HMAC secret sign() and verify() accept


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_key() -> bytes:
    """32 random bytes: an AES-256 or HMAC key."""
    return os.urandom(32)


def write_key_file(path: str | os.PathLike, key: bytes | None = None) -> Path:
    """Store a key (new if None) base64-encoded in a file only its owner can read (mode 600)."""
    path = Path(path)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never overwrite a key
    with os.fdopen(descriptor, "w") as file:
        file.write(base64.b64encode(key or new_key()).decode() + "\n")
    return path


def load_key(path: str | os.PathLike | None = None, *, env: str = KEY_ENV) -> bytes:
    """The 32-byte key from a key file, or else from the environment variable ``env`` (base64).

    Keys never live in code or notebooks: code gets copied, committed and shared.
    """
    if path is not None:
        text, where = Path(path).read_text(), str(path)
    elif os.environ.get(env):
        text, where = os.environ[env], f"${env}"
    else:
        raise KeyError(
            f"no key: pass a key file, or set {env} to a base64 key (see write_key_file)"
        )
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise ValueError(f"the key in {where} is not base64") from None
    if len(key) != 32:
        raise ValueError(f"the key in {where} has {len(key)} bytes; AES-256 needs 32")
    return key


def encrypt(plaintext: bytes, key: bytes, associated_data: bytes) -> bytes:
    """AES-256-GCM: ``nonce || ciphertext || tag``, with a fresh random nonce each call."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def decrypt(sealed: bytes, key: bytes, associated_data: bytes) -> bytes:
    """The plaintext, or IntegrityError if the key, the associated data or any byte is wrong."""
    if len(sealed) < NONCE_BYTES + 16:
        raise IntegrityError("the encrypted file is truncated: shorter than a nonce and a tag")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
    except InvalidTag:
        raise IntegrityError(
            "decryption failed: wrong key, a ciphertext made for another model name or version, "
            "or a changed byte"
        ) from None


def sign(message: bytes, signing_key: bytes | Ed25519PrivateKey) -> tuple[str, bytes]:
    """``("hmac-sha256", tag)`` for a bytes key, ``("ed25519", signature)`` for a private key."""
    if isinstance(signing_key, Ed25519PrivateKey):
        return "ed25519", signing_key.sign(message)
    if isinstance(signing_key, bytes | bytearray):
        _check_secret_length(signing_key, "signing_key")
        return "hmac-sha256", hmac.new(bytes(signing_key), message, hashlib.sha256).digest()
    raise TypeError("signing_key must be an Ed25519PrivateKey or a secret of at least 16 bytes")


def _check_secret_length(secret: bytes, what: str) -> None:
    # an empty or short HMAC secret is guessable: refuse it when signing AND when verifying,
    # or a manifest "signed" with b"" would verify under verify_key=b""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{what} is an HMAC secret of {len(secret)} bytes; it needs at least "
            f"{MIN_SECRET_BYTES} (new_key() makes 32)"
        )


def verify(
    message: bytes, algorithm: str, signature: bytes, verify_key: bytes | Ed25519PublicKey
) -> None:
    """Raise IntegrityError unless ``signature`` is ``algorithm``'s signature of ``message``.

    ``verify_key`` is the Ed25519 *public* key or the HMAC secret (at least 16 bytes, as for
    signing; a shorter one raises ValueError). A private key raises TypeError: the machines
    that verify should hold only the public key.
    """
    if isinstance(verify_key, Ed25519PrivateKey):
        raise TypeError(
            "verify_key is an Ed25519 private key: pass its public_key(); the machines that "
            "verify should never hold the key that signs"
        )
    if isinstance(verify_key, Ed25519PublicKey):
        if algorithm != "ed25519":
            raise IntegrityError(
                f"the manifest is signed with {algorithm}, but an Ed25519 key was given"
            )
        try:
            verify_key.verify(signature, message)
        except InvalidSignature:
            raise IntegrityError(
                "wrong signature: the manifest was changed, or signed by another key"
            ) from None
        return
    if isinstance(verify_key, bytes | bytearray):
        _check_secret_length(verify_key, "verify_key")
        if algorithm != "hmac-sha256":
            raise IntegrityError(
                f"the manifest is signed with {algorithm}, but an HMAC secret was given"
            )
        expected = hmac.new(bytes(verify_key), message, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):  # constant time: no timing leak
            raise IntegrityError(
                "wrong signature: the manifest was changed, or signed with another secret"
            )
        return
    raise TypeError("verify_key must be an Ed25519PublicKey or the HMAC secret (bytes)")
