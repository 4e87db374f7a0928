"""Chapter 6's safe saving and loading, under faults: every damaged or wrong load is refused."""

from __future__ import annotations

import random
import shutil

import pytest
import torch

from course_lib.hardening import (
    KEY_ENV,
    Ed25519PrivateKey,
    IntegrityError,
    UnsignedModelWarning,
    load_key,
    load_secure,
    load_weights,
    new_key,
    safe_torch_load,
    save_secure,
    save_weights,
    sign_file,
    verified_metadata,
    verify_file,
    write_key_file,
    write_pickle_payload,
)

# loading unsigned folders on purpose (allow_unsigned=True) warns every time; the warning is
# tested once, in test_loading_fails_closed_without_a_verify_key
pytestmark = pytest.mark.filterwarnings("ignore::course_lib.hardening.UnsignedModelWarning")


def weights(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "fc.weight": torch.randn(10, 32, generator=generator),
        "fc.bias": torch.randn(10, generator=generator),
    }


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(params=["hmac", "ed25519"])
def signing(request):
    """(signing key, verify key) for shared-secret and public-key signing."""
    if request.param == "hmac":
        secret = new_key()
        return secret, secret
    private = Ed25519PrivateKey.generate()
    return private, private.public_key()


def test_round_trips_plain_encrypted_and_signed(tmp_path, signing):
    signing_key, verify_key = signing
    key = new_key()
    metadata = {"name": "digits", "version": 3, "accuracy": 0.94}
    save_secure(weights(), tmp_path / "plain")
    save_secure(weights(), tmp_path / "sealed", key=key, signing_key=signing_key, metadata=metadata)
    state, meta = load_secure(tmp_path / "plain", allow_unsigned=True)
    assert same(state, weights()) and meta == {}
    state, meta = load_secure(tmp_path / "sealed", key=key, verify_key=verify_key)
    assert same(state, weights()) and meta == metadata
    assert sorted(p.name for p in (tmp_path / "sealed").iterdir()) == [
        "manifest.json",
        "manifest.sig",
        "weights.safetensors.enc",
    ]
    assert b"fc.weight" not in (tmp_path / "sealed" / "weights.safetensors.enc").read_bytes()


def test_random_bit_flips_anywhere_are_always_refused(tmp_path, signing):
    signing_key, verify_key = signing
    key = new_key()
    original = save_secure(
        weights(),
        tmp_path / "model",
        key=key,
        signing_key=signing_key,
        metadata={"name": "digits", "version": 1},
    )
    files = {p.name: p.read_bytes() for p in original.iterdir()}
    positions = [(name, i) for name, content in files.items() for i in range(len(content))]
    rng = random.Random(0)
    for trial in range(120):  # x2 signing kinds: 240 trials
        name, index = rng.choice(positions)
        bit = 1 << rng.randrange(8)
        copy = tmp_path / f"flip{trial}"
        copy.mkdir()
        for other, content in files.items():
            data = bytearray(content)
            if other == name:
                data[index] ^= bit
            (copy / other).write_bytes(bytes(data))
        with pytest.raises(IntegrityError):
            load_secure(copy, key=key, verify_key=verify_key)
        shutil.rmtree(copy)


def test_truncated_files_are_refused(tmp_path, signing):
    signing_key, verify_key = signing
    key = new_key()
    folder = save_secure(weights(), tmp_path / "model", key=key, signing_key=signing_key)
    for name in ("weights.safetensors.enc", "manifest.json", "manifest.sig"):
        copy = shutil.copytree(folder, tmp_path / f"cut-{name}")
        content = (copy / name).read_bytes()
        (copy / name).write_bytes(content[: len(content) // 2])
        with pytest.raises(IntegrityError):
            load_secure(copy, key=key, verify_key=verify_key)
    plain = save_secure(weights(), tmp_path / "plain")
    (plain / "weights.safetensors").write_bytes((plain / "weights.safetensors").read_bytes()[:40])
    with pytest.raises(IntegrityError, match="was changed"):
        load_secure(plain, allow_unsigned=True)


def test_wrong_or_missing_keys_are_refused(tmp_path):
    key = new_key()
    sealed = save_secure(
        weights(), tmp_path / "sealed", key=key, metadata={"name": "m", "version": 1}
    )
    with pytest.raises(IntegrityError, match="wrong key"):
        load_secure(sealed, key=new_key(), allow_unsigned=True)
    with pytest.raises(IntegrityError, match="pass the key"):
        load_secure(sealed, allow_unsigned=True)
    plain = save_secure(weights(), tmp_path / "plain")
    with pytest.raises(IntegrityError, match="not encrypted"):
        load_secure(plain, key=key, allow_unsigned=True)


def test_wrong_signatures_and_signing_mismatches_are_refused(tmp_path):
    secret, private = new_key(), Ed25519PrivateKey.generate()
    hmac_signed = save_secure(weights(), tmp_path / "hmac", signing_key=secret)
    ed_signed = save_secure(weights(), tmp_path / "ed", signing_key=private)
    unsigned = save_secure(weights(), tmp_path / "unsigned")
    with pytest.raises(IntegrityError, match="wrong signature"):
        load_secure(hmac_signed, verify_key=new_key())
    with pytest.raises(IntegrityError, match="wrong signature"):
        load_secure(ed_signed, verify_key=Ed25519PrivateKey.generate().public_key())
    with pytest.raises(IntegrityError, match="Ed25519 key was given"):
        load_secure(hmac_signed, verify_key=private.public_key())
    with pytest.raises(IntegrityError, match="pass verify_key"):
        load_secure(ed_signed)
    with pytest.raises(IntegrityError, match="not signed"):
        load_secure(unsigned, verify_key=secret)
    assert same(load_secure(ed_signed, verify_key=private.public_key())[0], weights())


def test_an_edited_manifest_is_refused(tmp_path, signing):
    signing_key, verify_key = signing
    folder = save_secure(
        weights(), tmp_path / "model", signing_key=signing_key, metadata={"accuracy": 0.9}
    )
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text().replace("0.9", "0.99"))
    with pytest.raises(IntegrityError, match="wrong signature"):
        load_secure(folder, verify_key=verify_key)


def test_a_file_swapped_between_two_versions_is_refused(tmp_path, signing):
    signing_key, verify_key = signing
    key = new_key()
    v1 = save_secure(
        weights(1),
        tmp_path / "v1",
        key=key,
        signing_key=signing_key,
        metadata={"name": "digits", "version": 1},
    )
    v2 = save_secure(
        weights(2),
        tmp_path / "v2",
        key=key,
        signing_key=signing_key,
        metadata={"name": "digits", "version": 2},
    )
    shutil.copy(v1 / "weights.safetensors.enc", v2 / "weights.safetensors.enc")
    with pytest.raises(IntegrityError, match="was changed"):
        load_secure(v2, key=key, verify_key=verify_key)


def test_ciphertext_is_bound_to_name_and_version(tmp_path):
    """Even with an unsigned manifest, moving a ciphertext to another version fails to decrypt."""
    key = new_key()
    folder = save_secure(
        weights(), tmp_path / "model", key=key, metadata={"name": "digits", "version": 1}
    )
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": 1', '"version": 2'))
    with pytest.raises(IntegrityError, match="another model name or version"):
        load_secure(folder, key=key, allow_unsigned=True)


def test_extra_missing_and_unknown_files_are_refused(tmp_path):
    folder = save_secure(weights(), tmp_path / "model")
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(IntegrityError, match="not in the manifest.*notes.txt"):
        load_secure(folder, allow_unsigned=True)
    (folder / "notes.txt").unlink()
    (folder / "weights.safetensors").unlink()
    with pytest.raises(IntegrityError, match="missing.*weights.safetensors"):
        load_secure(folder, allow_unsigned=True)
    checkpoint = tmp_path / "model.pt"
    torch.save(weights(), checkpoint)
    with pytest.raises(IntegrityError, match="unknown format"):
        load_secure(checkpoint, allow_unsigned=True)
    other = save_secure(weights(), tmp_path / "other")
    manifest = other / "manifest.json"
    manifest.write_text(manifest.read_text().replace("course-secure-model/1", "someone-else/7"))
    with pytest.raises(IntegrityError, match="unknown format"):
        load_secure(other, allow_unsigned=True)
    assert issubclass(IntegrityError, ValueError)


def test_a_pickle_payload_runs_under_weights_only_false_and_is_refused_by_the_course(tmp_path):
    checkpoint, marker = tmp_path / "innocent.pt", tmp_path / "payload-ran"
    write_pickle_payload(checkpoint, marker)
    with pytest.raises(IntegrityError, match=r"asks to run code while loading \(it calls \w+\)"):
        safe_torch_load(checkpoint)
    assert not marker.exists()
    torch.load(checkpoint, weights_only=False)  # what the course never does
    assert marker.exists()
    with pytest.raises(IntegrityError, match="not a valid safetensors"):
        load_weights(checkpoint)
    save_weights(weights(), tmp_path / "w.safetensors")
    assert same(load_weights(tmp_path / "w.safetensors"), weights())
    torch.save(weights(), tmp_path / "plain.pt")
    assert same(safe_torch_load(tmp_path / "plain.pt"), weights())


def test_a_nonce_is_never_reused(tmp_path):
    key = new_key()
    first = save_secure(weights(), tmp_path / "a", key=key)
    second = save_secure(weights(), tmp_path / "b", key=key)
    a = (first / "weights.safetensors.enc").read_bytes()
    b = (second / "weights.safetensors.enc").read_bytes()
    assert a[:12] != b[:12] and a[12:] != b[12:]  # fresh nonce, so a different ciphertext


def test_keys_come_from_a_private_file_or_the_environment(tmp_path, monkeypatch):
    path = write_key_file(tmp_path / "model.key")
    assert path.stat().st_mode & 0o777 == 0o600
    key = load_key(path)
    assert len(key) == 32
    with pytest.raises(FileExistsError):
        write_key_file(path)
    monkeypatch.setenv(KEY_ENV, path.read_text())
    assert load_key() == key
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(KeyError, match=KEY_ENV):
        load_key()
    (tmp_path / "short.key").write_text("c2hvcnQ=")
    with pytest.raises(ValueError, match="needs 32"):
        load_key(tmp_path / "short.key")


def test_a_process_killed_mid_save_leaves_the_previous_version_loadable(
    tmp_path, kill_while_writing
):
    key = new_key()
    folder = save_secure(weights(1), tmp_path / "model", key=key, metadata={"version": 1})
    kill_while_writing(f"""
        import torch
        state = {{"fc.weight": torch.ones(10, 32), "fc.bias": torch.ones(10)}}
        secure.save_secure(state, {str(folder)!r}, key=bytes.fromhex({key.hex()!r}), metadata={{"version": 2}})
    """)
    state, metadata = load_secure(folder, key=key, allow_unsigned=True)
    assert same(state, weights(1)) and metadata == {"version": 1}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.tmp-")]
    assert len(leftovers) == 1  # the half-written staging folder, never at the model's path


def test_loading_fails_closed_without_a_verify_key(tmp_path):
    unsigned = save_secure(weights(), tmp_path / "unsigned")
    with pytest.raises(IntegrityError, match="no verify_key given"):
        load_secure(unsigned)
    with pytest.warns(UnsignedModelWarning, match="WITHOUT a signature check"):
        state, _ = load_secure(unsigned, allow_unsigned=True)
    assert same(state, weights())
    with pytest.raises(ValueError, match="not both"):
        load_secure(unsigned, verify_key=new_key(), allow_unsigned=True)


def test_a_signed_folder_needs_its_verify_key_even_with_allow_unsigned(tmp_path, signing):
    signing_key, verify_key = signing
    folder = save_secure(weights(), tmp_path / "model", signing_key=signing_key)
    with pytest.raises(IntegrityError, match="is signed: pass verify_key"):
        load_secure(folder, allow_unsigned=True)
    assert same(load_secure(folder, verify_key=verify_key)[0], weights())


def test_a_detached_signature_catches_any_change_to_a_file(tmp_path, signing):
    signing_key, verify_key = signing
    path = tmp_path / "model.onnx"
    path.write_bytes(bytes(range(256)) * 8)
    signature = sign_file(path, signing_key)
    assert signature.name == "model.onnx.sig"
    assert verify_file(path, verify_key) == path.read_bytes()
    other_key = new_key() if isinstance(verify_key, bytes) else None
    other_key = other_key or Ed25519PrivateKey.generate().public_key()
    with pytest.raises(IntegrityError, match="wrong signature"):
        verify_file(path, other_key)
    data = bytearray(path.read_bytes())
    data[1000] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="wrong signature"):
        verify_file(path, verify_key)
    signature.unlink()
    with pytest.raises(IntegrityError, match="no detached signature"):
        verify_file(path, verify_key)


def test_a_short_or_empty_hmac_secret_is_refused_when_verifying_too(tmp_path):
    folder = save_secure(weights(), tmp_path / "m", signing_key=new_key())
    # a manifest HMAC-signed with the empty key, as an attacker would write it
    import hashlib
    import hmac

    raw = (folder / "manifest.json").read_bytes()
    tag = hmac.new(b"", raw, hashlib.sha256).hexdigest()
    (folder / "manifest.sig").write_text(f"hmac-sha256 {tag}\n")
    for short in (b"", b"k" * 15):
        with pytest.raises(ValueError, match="at least 16"):
            load_secure(folder, verify_key=short)
        with pytest.raises(ValueError, match="at least 16"):
            save_secure(weights(), tmp_path / "short", signing_key=short)


def test_a_private_key_is_refused_as_a_verify_key(tmp_path):
    private = Ed25519PrivateKey.generate()
    folder = save_secure(weights(), tmp_path / "m", signing_key=private)
    with pytest.raises(TypeError, match="public_key"):
        load_secure(folder, verify_key=private)
    assert same(load_secure(folder, verify_key=private.public_key())[0], weights())


def test_expected_refuses_another_validly_signed_artefact(tmp_path, signing):
    signing_key, verify_key = signing
    v1 = save_secure(
        weights(1), tmp_path / "v1", signing_key=signing_key, metadata={"name": "m", "version": 1}
    )
    v2 = save_secure(
        weights(2), tmp_path / "v2", signing_key=signing_key, metadata={"name": "m", "version": 2}
    )
    shutil.rmtree(v2)
    shutil.copytree(v1, v2)  # a replay: v1, validly signed, where v2 should be
    assert same(load_secure(v2, verify_key=verify_key)[0], weights(1))  # signature alone: loads
    with pytest.raises(IntegrityError, match="not the expected"):
        load_secure(v2, verify_key=verify_key, expected={"name": "m", "version": 2})
    with pytest.raises(IntegrityError, match="not the expected"):
        verified_metadata(v2, verify_key=verify_key, expected={"name": "other"})
    assert verified_metadata(v2, verify_key=verify_key, expected={"version": 1}) == {
        "name": "m",
        "version": 1,
    }
