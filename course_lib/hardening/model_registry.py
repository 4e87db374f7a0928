"""A model registry on a local folder: numbered versions, aliases, lineage, safe for concurrent
processes on one machine.

Layout::

    root/<name>/versions/<n>/   one save_secure folder per version; its weights, manifest and
                                signature are never rewritten (rotate_data_key rewrites only
                                its data_key.json)
    root/<name>/registry.json   an index: versions (metrics, parent, data fingerprint, time) and
                                aliases; NOT signed
    root/<name>/.lock           an OS file lock (flock): one writer at a time, across the
                                processes of one machine (flock is unreliable over NFS)

Every write is atomic. A version folder is written under a temporary name and renamed into
place, and registry.json is replaced in one ``os.replace``. A process killed mid-register
leaves at worst an unregistered folder, never a damaged version. "champion" and "candidate"
are aliases: ``promote`` points one at a version, ``rollback`` moves it back to where it
pointed before.

The registry verifies by default: registering needs a ``signing_key`` and loading a
``verify_key``, unless the registry is opened with ``allow_unsigned=True`` (for tests and
scratch work; every load then warns). With a ``kms``, versions are envelope-encrypted.
``versions`` and ``lineage`` read each version's metrics, parent and data fingerprint from its
*signed* manifest, and raise IntegrityError where the unsigned ``registry.json`` disagrees;
``load`` checks that the signed name and version are the ones asked for. The aliases are only
in ``registry.json``: whoever can write it can point "champion" at another signed version.
:func:`dataset_fingerprint` computes the ``data_fingerprint`` of a version from the data
itself. It records what the signer claims the model was trained on; it does not prove it
(build provenance, SLSA / in-toto attestations, is the industrial answer).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from course_lib.files import write_atomically
from course_lib.hardening.crypto import Ed25519PrivateKey
from course_lib.hardening.envelope import SimulatedKMS
from course_lib.hardening.secure import load_secure, save_secure, verified_metadata
from course_lib.hardening.serialization import IntegrityError

__all__ = ["ModelRegistry", "dataset_fingerprint"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_RECORD_FIELDS = ("metrics", "parent", "data_fingerprint", "created")


class ModelRegistry:
    """Versions of named models in the folder ``root`` (created if missing).

    ``signing_key`` signs what ``register`` writes (the training side); ``verify_key`` checks
    what ``load`` reads (the serving side); ``kms`` (or a plain ``key``) encrypts and
    decrypts. Without keys, the registry refuses to write or load unsigned versions unless
    ``allow_unsigned=True``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        key: bytes | None = None,
        kms: SimulatedKMS | None = None,
        signing_key=None,
        verify_key=None,
        allow_unsigned: bool = False,
    ):
        if allow_unsigned and (signing_key is not None or verify_key is not None):
            raise ValueError("allow_unsigned=True is for a registry without signing or verify keys")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.key, self.kms = key, kms
        self.signing_key, self.verify_key = signing_key, verify_key
        self.allow_unsigned = allow_unsigned

    # --- writing -------------------------------------------------------------------------------

    def register(
        self,
        state_dict: dict[str, torch.Tensor],
        name: str,
        *,
        metrics: dict | None = None,
        parent: int | None = None,
        data_fingerprint: str | None = None,
    ) -> int:
        """Store a new version of ``name``; return its number (1, 2, ...).

        ``metrics`` are what promotion decisions read: validation metrics, not test ones.
        ``data_fingerprint`` should come from :func:`dataset_fingerprint` of the training data.
        All of it is signed into the version's manifest.
        """
        if self.signing_key is None and not self.allow_unsigned:
            raise ValueError(
                "this registry has no signing_key: versions it wrote could not be verified on "
                "load (open it with allow_unsigned=True only for scratch work)"
            )
        folder = self._folder(name)
        with self._locked(name):
            registry = self._read(name)
            if parent is not None and str(parent) not in registry["versions"]:
                raise ValueError(f"{name} has no version {parent} to be the parent")
            taken = [int(v) for v in registry["versions"]]
            # version folders a crashed register left behind are taken too
            taken += [int(p.name) for p in (folder / "versions").glob("[0-9]*")]
            version = max(taken, default=0) + 1
            record = {
                "metrics": metrics or {},
                "parent": parent,
                "data_fingerprint": data_fingerprint,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            save_secure(
                state_dict,
                folder / "versions" / str(version),
                key=self.key,
                kms=self.kms,
                signing_key=self.signing_key,
                metadata={"name": name, "version": version, **record},
            )
            registry["versions"][str(version)] = record
            self._write(name, registry)
        return version

    def promote(self, name: str, version: int, alias: str) -> None:
        """Point ``alias`` (e.g. "champion") at ``version``; the previous target is remembered."""
        with self._locked(name):
            registry = self._read(name)
            if str(version) not in registry["versions"]:
                raise ValueError(
                    f"{name} has no version {version}; it has {self._numbers(registry)}"
                )
            history = registry["aliases"].setdefault(alias, [])
            history.append(version)
            self._write(name, registry)

    def rollback(self, name: str, alias: str) -> int:
        """Move ``alias`` back to the version it pointed at before; return that version."""
        with self._locked(name):
            registry = self._read(name)
            history = registry["aliases"].get(alias, [])
            if len(history) < 2:
                raise ValueError(f"{name}@{alias} has no earlier version to roll back to")
            history.pop()
            self._write(name, registry)
            return history[-1]

    # --- reading -------------------------------------------------------------------------------

    def versions(self, name: str) -> list[dict]:
        """Every registered version of ``name``, oldest first: its number and signed record.

        The record (``metrics``, ``parent``, ``data_fingerprint``, ``created``) comes from the
        version's verified manifest; IntegrityError if ``registry.json`` says otherwise.
        """
        registry = self._read(name)
        return [
            {"version": int(v), **self._signed_record(name, int(v), registry)}
            for v in sorted(registry["versions"], key=int)
        ]

    def _signed_record(self, name: str, version: int, registry: dict) -> dict:
        metadata = verified_metadata(
            self._folder(name) / "versions" / str(version),
            verify_key=self._reading_key(),
            allow_unsigned=self.allow_unsigned,
            expected={"name": name, "version": version},
        )
        signed = {field: metadata.get(field) for field in _RECORD_FIELDS}
        indexed = {field: registry["versions"][str(version)].get(field) for field in _RECORD_FIELDS}
        if signed != indexed:
            different = sorted(f for f in _RECORD_FIELDS if signed[f] != indexed[f])
            raise IntegrityError(
                f"{name} version {version}: registry.json's {different} differ from the signed "
                "manifest's: the unsigned index was edited"
            )
        return signed

    def _reading_key(self):
        """The key that verifies: ``verify_key``, else the one that checks ``signing_key``."""
        if self.verify_key is not None or self.signing_key is None:
            return self.verify_key
        if isinstance(self.signing_key, Ed25519PrivateKey):
            return self.signing_key.public_key()
        return self.signing_key  # an HMAC secret verifies what it signs

    def aliases(self, name: str) -> dict[str, int]:
        """Where each alias points now."""
        return {
            alias: history[-1] for alias, history in self._read(name)["aliases"].items() if history
        }

    def resolve(self, reference: str) -> tuple[str, int]:
        """``"digits@champion"`` or ``"digits@3"`` -> ("digits", version)."""
        name, _, which = reference.partition("@")
        registry = self._read(name)
        if which.isdigit() and which in registry["versions"]:
            return name, int(which)
        if which in registry["aliases"] and registry["aliases"][which]:
            return name, registry["aliases"][which][-1]
        raise KeyError(
            f"no {reference!r}: versions {self._numbers(registry)}, aliases {sorted(registry['aliases'])}"
        )

    def load(self, reference: str) -> tuple[dict[str, torch.Tensor], dict]:
        """``(state_dict, metadata)`` of ``"name@alias"`` or ``"name@version"``, fully verified."""
        name, version = self.resolve(reference)
        try:
            return load_secure(
                self._folder(name) / "versions" / str(version),
                key=self.key,
                kms=self.kms,
                verify_key=self._reading_key(),
                allow_unsigned=self.allow_unsigned,
                expected={"name": name, "version": version},
            )
        except IntegrityError as error:
            raise IntegrityError(f"{reference} (version {version}): {error}") from None

    def lineage(self, reference: str) -> list[int]:
        """The version and its ancestors, newest first: [5, 3, 1] when 5's parent is 3 and 3's is 1.

        Each parent is read from the version's signed manifest (see :meth:`versions`).
        """
        name, version = self.resolve(reference)
        registry, chain = self._read(name), []
        while version is not None:
            if version in chain or str(version) not in registry["versions"]:
                raise IntegrityError(f"{name}: the lineage of {reference} is broken at {version}")
            chain.append(version)
            version = self._signed_record(name, version, registry)["parent"]
        return chain

    # --- storage ----------------------------------------------------------------------------------

    def _folder(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ValueError(f"model names are letters, digits, '.', '_' and '-', got {name!r}")
        return self.root / name

    @contextmanager
    def _locked(self, name: str):
        folder = self._folder(name)
        (folder / "versions").mkdir(parents=True, exist_ok=True)
        fcntl = _fcntl()
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # waits for any other writer on this machine
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, name: str) -> dict:
        path = self._folder(name) / "registry.json"
        if not path.exists():
            return {"versions": {}, "aliases": {}}
        return json.loads(path.read_text())

    def _write(self, name: str, registry: dict) -> None:
        path = self._folder(name) / "registry.json"
        # readers see the old file or the new one, never half of one
        write_atomically(path, json.dumps(registry, indent=1, sort_keys=True))

    @staticmethod
    def _numbers(registry: dict) -> list[int]:
        return sorted(int(v) for v in registry["versions"])


def dataset_fingerprint(inputs: torch.Tensor, targets: torch.Tensor) -> str:
    """SHA-256 (hex) of a data set: each tensor's dtype, shape and bytes, inputs then targets.

    Changes when any value, any label, a shape or a dtype changes; the same data gives the
    same fingerprint on every machine (the bytes are those of the CPU tensor, little-endian
    on every platform torch runs on).
    """
    digest = hashlib.sha256(b"course-dataset-fingerprint/1")
    for tensor in (inputs, targets):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"expected tensors, got {type(tensor).__name__}")
        tensor = tensor.detach().cpu().contiguous()
        header = f"{tensor.dtype}|{tuple(tensor.shape)}|".encode()
        digest.update(len(header).to_bytes(8, "little") + header)
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def _fcntl():
    """POSIX file locks; imported where a write needs them, so reading works everywhere."""
    try:
        import fcntl
    except ImportError:  # Windows has no fcntl
        raise OSError(
            "ModelRegistry writes under a POSIX file lock (fcntl), which Windows does not have: "
            "register and promote models on Linux or macOS (or in WSL); loading works anywhere"
        ) from None
    return fcntl
