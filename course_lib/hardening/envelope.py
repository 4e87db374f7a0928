"""Envelope encryption: a data key per artefact, wrapped by a key-encryption key kept elsewhere.

A key in a file on the same disk as the ciphertext protects nothing against whoever copies
the disk; an environment variable leaks through ``/proc/<pid>/environ``, child processes and
crash dumps. So the key that matters never reaches the machine that stores the weights:

- each artefact gets a fresh random **data key** (DEK) that encrypts its weights
  (AES-256-GCM, :func:`course_lib.hardening.crypto.encrypt`);
- the data key is stored only **wrapped**: encrypted by a **key-encryption key** (KEK) that
  lives in a key management service (AWS KMS, Google Cloud KMS, Azure Key Vault, Vault, an
  HSM). The service unwraps on request, for callers it authorises, and logs every request;
  the KEK itself never leaves it;
- next to the ciphertext go the KEK's id and the wrapped data key, nothing secret;
- **rotation** creates a new *version* of the KEK, which wraps from then on; the old
  versions stay in the service and still unwrap what they wrapped (AWS KMS keeps them for
  the key's lifetime; ``ReEncrypt`` re-wraps). :func:`rewrap` re-wraps a data key under the
  current version: a few dozen bytes per artefact, the weights are not re-encrypted, and the
  data key stays the same. Rotation limits how much one KEK version protects, and lets you
  later **destroy** old versions, a separate, deliberate step: copies wrapped only under a
  destroyed version (an old backup) can never be opened again;
- rotation does nothing against a leaked **data key** (it sits in the memory of every process
  that served the model): the remedy is re-encryption under a fresh data key, i.e. saving
  the artefact again (:func:`seal_envelope`), which makes new ciphertext.

:class:`SimulatedKMS` stands in for the service in the course: its KEKs live only in the
object's memory, never in a file, and certainly not in the folder of the ciphertexts.
"""

from __future__ import annotations

from course_lib.hardening.crypto import decrypt, encrypt, new_key
from course_lib.hardening.serialization import IntegrityError

__all__ = ["SimulatedKMS", "seal_envelope", "open_envelope", "rewrap"]


class SimulatedKMS:
    """A stand-in for a key management service: one KEK, in numbered versions, that wraps and
    unwraps data keys.

    The KEK versions are private to the object (no method returns one): like a real KMS, it
    only answers ``wrap`` and ``unwrap``. ``rotate`` adds a new current version, which
    ``wrap`` uses from then on; the old versions still unwrap until ``destroy_version``
    deletes one (the separate, irreversible step).
    """

    def __init__(self, name: str = "kms"):
        self.name = name
        self._keks: dict[str, bytes] = {}
        self._created = 0
        self.current_key_id = self.rotate()

    def rotate(self) -> str:
        """Create a new KEK version, make it the one ``wrap`` uses, and return its id."""
        self._created += 1
        key_id = f"{self.name}/kek-{self._created}"
        self._keks[key_id] = new_key()
        self.current_key_id = key_id
        return key_id

    def destroy_version(self, key_id: str) -> None:
        """Delete a KEK version: data keys wrapped only under it can never be unwrapped again."""
        if key_id == self.current_key_id:
            raise ValueError(f"{key_id} is the current KEK version: rotate before destroying it")
        self._kek(key_id)
        del self._keks[key_id]

    def key_ids(self) -> list[str]:
        """The ids of the KEK versions that can still unwrap, oldest first."""
        return list(self._keks)

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        """``(key_id, wrapped)``: ``data_key`` encrypted under the current KEK, bound to ``context``."""
        key_id = self.current_key_id
        return key_id, encrypt(data_key, self._keks[key_id], _bound(key_id, context))

    def unwrap(self, key_id: str, wrapped: bytes, context: bytes) -> bytes:
        """The data key, or IntegrityError: unknown or destroyed key version, wrong context, changed bytes."""
        kek = self._kek(key_id)
        try:
            return decrypt(wrapped, kek, _bound(key_id, context))
        except IntegrityError:
            raise IntegrityError(
                f"{self.name} cannot unwrap the data key with {key_id}: it was wrapped by another "
                "KEK or for another artefact, or a byte was changed"
            ) from None

    def _kek(self, key_id: str) -> bytes:
        if key_id not in self._keks:
            raise IntegrityError(
                f"{self.name} has no key {key_id!r} (unknown or destroyed); it has {self.key_ids()}"
            )
        return self._keks[key_id]


def _bound(key_id: str, context: bytes) -> bytes:
    # the wrapped key is bound to the KEK's id and to the artefact: moved elsewhere, it fails
    return key_id.encode() + b"\x00" + context


def seal_envelope(plaintext: bytes, kms: SimulatedKMS, context: bytes) -> tuple[bytes, dict]:
    """``(ciphertext, key_record)``: ``plaintext`` encrypted under a new data key, wrapped by ``kms``.

    ``key_record`` is ``{"kek_id": ..., "wrapped_key": hex}``: store it next to the ciphertext.
    ``context`` (the artefact's name and version) is bound to both the ciphertext and the
    wrapped key.
    """
    data_key = new_key()
    ciphertext = encrypt(plaintext, data_key, context)
    key_id, wrapped = kms.wrap(data_key, context)
    return ciphertext, {"kek_id": key_id, "wrapped_key": wrapped.hex()}


def open_envelope(ciphertext: bytes, key_record: dict, kms: SimulatedKMS, context: bytes) -> bytes:
    """The plaintext: ask ``kms`` to unwrap the data key, then decrypt. IntegrityError on any mismatch."""
    data_key = kms.unwrap(key_record["kek_id"], _wrapped(key_record), context)
    return decrypt(ciphertext, data_key, context)


def rewrap(key_record: dict, kms: SimulatedKMS, context: bytes) -> dict:
    """The same data key, re-wrapped under ``kms``'s current KEK version (what ``ReEncrypt`` does).

    Neither the data key nor the ciphertext changes: a copy of the old key record (a backup)
    still opens as long as its KEK version exists, and any copy of the new record opens it.
    """
    data_key = kms.unwrap(key_record["kek_id"], _wrapped(key_record), context)
    key_id, wrapped = kms.wrap(data_key, context)
    return {"kek_id": key_id, "wrapped_key": wrapped.hex()}


def _wrapped(key_record: dict) -> bytes:
    try:
        return bytes.fromhex(key_record["wrapped_key"])
    except (KeyError, TypeError, ValueError):
        raise IntegrityError("the key record is malformed: no hex 'wrapped_key'") from None
