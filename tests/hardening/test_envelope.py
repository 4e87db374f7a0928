"""Envelope encryption: data keys wrapped by a KMS's KEK; wrong KEK, unknown id, rotation, tampering."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from course_lib.hardening import (
    Ed25519PrivateKey,
    IntegrityError,
    SimulatedKMS,
    load_secure,
    new_key,
    open_envelope,
    rewrap,
    rotate_data_key,
    save_secure,
    seal_envelope,
)

METADATA = {"name": "digits", "version": 1}


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"fc.weight": torch.randn(10, 32, generator=generator), "fc.bias": torch.zeros(10)}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def sealed(tmp_path):
    """(folder, kms, public key): a signed, envelope-encrypted model."""
    kms, private = SimulatedKMS("test-kms"), Ed25519PrivateKey.generate()
    folder = save_secure(
        weights(), tmp_path / "model", kms=kms, signing_key=private, metadata=METADATA
    )
    return folder, kms, private.public_key()


def test_envelope_round_trip_stores_only_the_wrapped_key(sealed):
    folder, kms, public = sealed
    assert sorted(p.name for p in folder.iterdir()) == [
        "data_key.json",
        "manifest.json",
        "manifest.sig",
        "weights.safetensors.enc",
    ]
    record = json.loads((folder / "data_key.json").read_text())
    assert record["kek_id"] == "test-kms/kek-1" and len(bytes.fromhex(record["wrapped_key"])) == 60
    state, metadata = load_secure(folder, kms=kms, verify_key=public)
    assert same(state, weights()) and metadata == METADATA
    assert not any(isinstance(value, bytes) for value in vars(kms).values())  # KEKs stay private


def test_another_kms_with_the_same_key_ids_cannot_unwrap(sealed):
    folder, _, public = sealed
    impostor = SimulatedKMS("test-kms")  # same ids, other KEKs
    with pytest.raises(IntegrityError, match="cannot unwrap"):
        load_secure(folder, kms=impostor, verify_key=public)


def test_an_unknown_key_id_is_refused(sealed):
    folder, kms, public = sealed
    record = json.loads((folder / "data_key.json").read_text())
    record["kek_id"] = "test-kms/kek-9"
    (folder / "data_key.json").write_text(json.dumps(record))
    with pytest.raises(IntegrityError, match="has no key 'test-kms/kek-9'"):
        load_secure(folder, kms=kms, verify_key=public)


def test_rotation_rewraps_the_data_key_without_touching_the_weights(sealed, tmp_path):
    folder, kms, public = sealed
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    backup = shutil.copytree(folder, tmp_path / "backup")  # taken before the rotation
    old, new = kms.current_key_id, kms.rotate()
    assert rotate_data_key(folder, kms) == new == "test-kms/kek-2"
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after.keys() == before.keys()
    assert {n for n in after if after[n] != before[n]} == {"data_key.json"}
    assert same(load_secure(folder, kms=kms, verify_key=public)[0], weights())
    # rotation alone protects nothing: the old version still unwraps the backup
    assert same(load_secure(backup, kms=kms, verify_key=public)[0], weights())
    assert kms.key_ids() == [old, new]
    kms.destroy_version(old)
    assert same(load_secure(folder, kms=kms, verify_key=public)[0], weights())
    with pytest.raises(IntegrityError, match="unknown or destroyed"):
        load_secure(backup, kms=kms, verify_key=public)
    with pytest.raises(ValueError, match="rotate before destroying"):
        kms.destroy_version(new)


def test_a_backup_opens_with_the_rewrapped_key_record_after_its_version_is_destroyed(
    sealed, tmp_path
):
    """Re-wrapping keeps the data key: the backup's ciphertext is the live one, byte for byte."""
    folder, kms, public = sealed
    backup = shutil.copytree(folder, tmp_path / "backup")
    old = kms.current_key_id
    kms.rotate()
    rotate_data_key(folder, kms)
    kms.destroy_version(old)
    name = "weights.safetensors.enc"
    assert (backup / name).read_bytes() == (folder / name).read_bytes()
    shutil.copy(folder / "data_key.json", backup / "data_key.json")
    assert same(load_secure(backup, kms=kms, verify_key=public)[0], weights())


def test_saving_again_makes_a_fresh_data_key_and_new_ciphertext(tmp_path):
    """What a leaked data key calls for: re-encryption, not rotation."""
    kms, secret = SimulatedKMS(), new_key()
    first = save_secure(weights(), tmp_path / "a", kms=kms, signing_key=secret, metadata=METADATA)
    second = save_secure(weights(), tmp_path / "b", kms=kms, signing_key=secret, metadata=METADATA)
    name = "weights.safetensors.enc"
    assert (first / name).read_bytes() != (second / name).read_bytes()
    shutil.copy(first / "data_key.json", second / "data_key.json")  # the old data key
    with pytest.raises(IntegrityError):
        load_secure(second, kms=kms, verify_key=secret)


@pytest.mark.parametrize("field", ["wrapped_key", "ciphertext"])
def test_a_changed_byte_in_the_wrapped_key_or_the_weights_is_refused(sealed, field):
    folder, kms, public = sealed
    if field == "wrapped_key":
        record = json.loads((folder / "data_key.json").read_text())
        wrapped = bytearray(bytes.fromhex(record["wrapped_key"]))
        wrapped[20] ^= 1
        record["wrapped_key"] = wrapped.hex()
        (folder / "data_key.json").write_text(json.dumps(record))
        expected = "cannot unwrap"
    else:
        data = bytearray((folder / "weights.safetensors.enc").read_bytes())
        data[40] ^= 1
        (folder / "weights.safetensors.enc").write_bytes(bytes(data))
        expected = "was changed"
    with pytest.raises(IntegrityError, match=expected):
        load_secure(folder, kms=kms, verify_key=public)


def test_a_wrapped_key_is_bound_to_its_artefact(tmp_path):
    kms, secret = SimulatedKMS(), new_key()
    v1 = save_secure(weights(1), tmp_path / "v1", kms=kms, signing_key=secret, metadata=METADATA)
    v2 = save_secure(
        weights(2),
        tmp_path / "v2",
        kms=kms,
        signing_key=secret,
        metadata={**METADATA, "version": 2},
    )
    shutil.copy(v1 / "data_key.json", v2 / "data_key.json")
    with pytest.raises(IntegrityError, match="cannot unwrap"):
        load_secure(v2, kms=kms, verify_key=secret)
    (v2 / "data_key.json").unlink()
    with pytest.raises(IntegrityError, match="data key is lost"):
        load_secure(v2, kms=kms, verify_key=secret)


def test_kms_and_key_modes_do_not_mix(tmp_path):
    kms, secret = SimulatedKMS(), new_key()
    with pytest.raises(ValueError, match="not both"):
        save_secure(weights(), tmp_path / "both", key=new_key(), kms=kms)
    direct = save_secure(weights(), tmp_path / "direct", key=new_key(), signing_key=secret)
    with pytest.raises(IntegrityError, match="refusing a downgraded model"):
        load_secure(direct, kms=kms, verify_key=secret)
    envelope = save_secure(weights(), tmp_path / "envelope", kms=kms, signing_key=secret)
    with pytest.raises(IntegrityError, match="pass the kms"):
        load_secure(envelope, verify_key=secret)
    with pytest.raises(ValueError, match="not envelope-encrypted"):
        rotate_data_key(direct, kms)


def test_the_envelope_functions_on_bytes():
    kms = SimulatedKMS()
    ciphertext, record = seal_envelope(b"weights", kms, b"m@1")
    assert (
        b"weights" not in ciphertext
        and open_envelope(ciphertext, record, kms, b"m@1") == b"weights"
    )
    with pytest.raises(IntegrityError):
        open_envelope(ciphertext, record, kms, b"m@2")
    kms.rotate()
    rotated = rewrap(record, kms, b"m@1")
    assert rotated["kek_id"] != record["kek_id"]
    assert open_envelope(ciphertext, rotated, kms, b"m@1") == b"weights"
    with pytest.raises(IntegrityError, match="malformed"):
        open_envelope(ciphertext, {"kek_id": rotated["kek_id"]}, kms, b"m@1")
