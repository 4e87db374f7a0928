"""ModelRegistry: versions, aliases, rollback, lineage; concurrent writers and crashes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from course_lib.hardening import (
    Ed25519PrivateKey,
    IntegrityError,
    ModelRegistry,
    SimulatedKMS,
    UnsignedModelWarning,
    dataset_fingerprint,
    new_key,
)

# scratch registries (allow_unsigned=True) warn on every load; tested once below
pytestmark = pytest.mark.filterwarnings("ignore::course_lib.hardening.UnsignedModelWarning")


def weights(value: float) -> dict[str, torch.Tensor]:
    return {"fc.weight": torch.full((4, 8), value), "fc.bias": torch.full((4,), value)}


def test_versions_aliases_rollback_and_lineage(tmp_path):
    registry = ModelRegistry(tmp_path, allow_unsigned=True)
    first = registry.register(
        weights(1), "digits", metrics={"accuracy": 0.90}, data_fingerprint="abc"
    )
    second = registry.register(weights(2), "digits", metrics={"accuracy": 0.93}, parent=first)
    third = registry.register(weights(3), "digits", metrics={"accuracy": 0.95}, parent=second)
    assert (first, second, third) == (1, 2, 3)
    assert [v["metrics"]["accuracy"] for v in registry.versions("digits")] == [0.90, 0.93, 0.95]
    registry.promote("digits", 2, "champion")
    registry.promote("digits", 3, "champion")
    registry.promote("digits", 3, "candidate")
    assert registry.aliases("digits") == {"champion": 3, "candidate": 3}
    state, metadata = registry.load("digits@champion")
    assert torch.equal(state["fc.bias"], torch.full((4,), 3.0)) and metadata["version"] == 3
    assert registry.rollback("digits", "champion") == 2
    assert registry.load("digits@champion")[1]["version"] == 2
    assert registry.load("digits@1")[1]["data_fingerprint"] == "abc"
    assert registry.lineage("digits@3") == [3, 2, 1]
    with pytest.raises(ValueError, match="no earlier version"):
        registry.rollback("digits", "champion")
    with pytest.raises(ValueError, match="no version 9"):
        registry.promote("digits", 9, "champion")
    with pytest.raises(ValueError, match="no version 7 to be the parent"):
        registry.register(weights(4), "digits", parent=7)
    with pytest.raises(KeyError, match="aliases"):
        registry.load("digits@production")
    with pytest.raises(ValueError, match="model names"):
        registry.register(weights(1), "../escape")


def test_an_encrypted_signed_registry_refuses_a_tampered_version(tmp_path):
    private = Ed25519PrivateKey.generate()
    key = new_key()
    registry = ModelRegistry(
        tmp_path, key=key, signing_key=private, verify_key=private.public_key()
    )
    registry.register(weights(1), "digits")
    assert torch.equal(registry.load("digits@1")[0]["fc.weight"], torch.full((4, 8), 1.0))
    sealed = tmp_path / "digits" / "versions" / "1" / "weights.safetensors.enc"
    data = bytearray(sealed.read_bytes())
    data[-1] ^= 1
    sealed.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        registry.load("digits@1")


def test_a_whole_version_copied_over_another_is_refused(tmp_path):
    import shutil

    private = Ed25519PrivateKey.generate()
    registry = ModelRegistry(
        tmp_path, key=new_key(), signing_key=private, verify_key=private.public_key()
    )
    old, new = registry.register(weights(1), "digits"), registry.register(weights(2), "digits")
    registry.promote("digits", new, "champion")
    versions = tmp_path / "digits" / "versions"
    shutil.rmtree(versions / str(new))
    shutil.copytree(versions / str(old), versions / str(new))  # signed, and decrypts: but it is v1
    with pytest.raises(IntegrityError, match=r"digits@champion \(version 2\).*not the expected"):
        registry.load("digits@champion")


def _writer_script(root, value: float, count: int) -> str:
    return textwrap.dedent(f"""
        import torch
        from course_lib.hardening import ModelRegistry
        registry = ModelRegistry({str(root)!r}, allow_unsigned=True)
        for i in range({count}):
            state = {{"fc.weight": torch.full((4, 8), {value}), "fc.bias": torch.full((4,), float(i))}}
            print(registry.register(state, "digits", metrics={{"writer": {value}}}), flush=True)
    """)


def test_two_processes_registering_at_once_get_distinct_loadable_versions(tmp_path):
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _writer_script(tmp_path, value, 8)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for value in (1.0, 2.0)
    ]
    outputs = [writer.communicate(timeout=120)[0].split() for writer in writers]
    assert all(writer.returncode == 0 for writer in writers)
    numbers = sorted(int(n) for output in outputs for n in output)
    assert numbers == list(range(1, 17))
    registry = ModelRegistry(tmp_path, allow_unsigned=True)
    for record in registry.versions("digits"):
        state, metadata = registry.load(f"digits@{record['version']}")
        assert state["fc.weight"][0, 0].item() == metadata["metrics"]["writer"]


def test_a_process_killed_mid_register_leaves_the_registry_usable(tmp_path, kill_while_writing):
    registry = ModelRegistry(tmp_path, allow_unsigned=True)
    registry.register(weights(1), "digits")
    registry.promote("digits", 1, "champion")
    kill_while_writing(f"""
        import torch
        from course_lib.hardening import ModelRegistry  # killed with the lock held
        ModelRegistry({str(tmp_path)!r}, allow_unsigned=True).register({{"fc.weight": torch.zeros(4, 8)}}, "digits")
    """)
    assert [v["version"] for v in registry.versions("digits")] == [1]
    assert registry.load("digits@champion")[1]["version"] == 1
    assert json.loads((tmp_path / "digits" / "registry.json").read_text())["aliases"] == {
        "champion": [1]
    }
    assert registry.register(weights(2), "digits") == 2  # the lock died with the process


def test_without_posix_locks_writing_says_why_and_reading_still_works(tmp_path, monkeypatch):
    registry = ModelRegistry(tmp_path, allow_unsigned=True)
    registry.register({"fc.weight": torch.ones(2, 2)}, "digits")
    monkeypatch.setitem(sys.modules, "fcntl", None)  # as on Windows: `import fcntl` fails
    with pytest.raises(OSError, match="Windows does not have"):
        registry.register({"fc.weight": torch.zeros(2, 2)}, "digits")
    state, metadata = registry.load("digits@1")
    assert torch.equal(state["fc.weight"], torch.ones(2, 2)) and metadata["version"] == 1


def test_a_registry_without_keys_refuses_to_write_or_load_unless_told(tmp_path):
    with pytest.raises(ValueError, match="no signing_key"):
        ModelRegistry(tmp_path).register(weights(1), "digits")
    ModelRegistry(tmp_path, allow_unsigned=True).register(weights(1), "digits")
    with pytest.raises(IntegrityError, match="no verify_key given"):
        ModelRegistry(tmp_path).load("digits@1")
    with pytest.warns(UnsignedModelWarning):
        ModelRegistry(tmp_path, allow_unsigned=True).load("digits@1")
    with pytest.raises(ValueError, match="without signing or verify keys"):
        ModelRegistry(tmp_path, allow_unsigned=True, verify_key=new_key())


def test_a_kms_registry_round_trips_and_needs_the_kms(tmp_path):
    kms, private = SimulatedKMS(), Ed25519PrivateKey.generate()
    training = ModelRegistry(tmp_path, kms=kms, signing_key=private)
    training.register(weights(1), "digits")
    assert (tmp_path / "digits" / "versions" / "1" / "data_key.json").is_file()
    serving = ModelRegistry(tmp_path, kms=kms, verify_key=private.public_key())
    assert torch.equal(serving.load("digits@1")[0]["fc.bias"], torch.ones(4))
    with pytest.raises(IntegrityError, match="pass the kms"):
        ModelRegistry(tmp_path, verify_key=private.public_key()).load("digits@1")


def test_the_data_fingerprint_changes_with_one_label_a_shape_or_a_dtype():
    inputs = torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(20) % 10
    reference = dataset_fingerprint(inputs, targets)
    assert reference == dataset_fingerprint(inputs.clone(), targets.clone())
    assert len(reference) == 64 and int(reference, 16) >= 0
    one_label = targets.clone()
    one_label[7] = 3
    assert dataset_fingerprint(inputs, one_label) != reference
    one_pixel = inputs.clone()
    one_pixel[3, 0, 1, 1] += 1e-6
    assert dataset_fingerprint(one_pixel, targets) != reference
    assert dataset_fingerprint(inputs.reshape(20, 16), targets) != reference  # same bytes
    assert dataset_fingerprint(inputs, targets.int()) != reference
    assert dataset_fingerprint(inputs[:, :, :, :2].transpose(2, 3), targets)  # non-contiguous
    with pytest.raises(TypeError, match="expected tensors"):
        dataset_fingerprint(inputs.tolist(), targets)


def test_versions_and_lineage_come_from_the_signed_manifests(tmp_path):
    private = Ed25519PrivateKey.generate()
    registry = ModelRegistry(tmp_path, signing_key=private)  # verifies with the public key
    registry.register(weights(1), "digits", metrics={"val_accuracy": 0.9}, data_fingerprint="a")
    registry.register(weights(2), "digits", metrics={"val_accuracy": 0.8}, parent=1)
    assert registry.lineage("digits@2") == [2, 1]
    assert registry.versions("digits")[0]["metrics"] == {"val_accuracy": 0.9}
    index = tmp_path / "digits" / "registry.json"
    original = index.read_text()
    for field, value in [("parent", None), ("metrics", {"val_accuracy": 0.99})]:
        edited = json.loads(original)
        edited["versions"]["2"][field] = value
        index.write_text(json.dumps(edited))
        with pytest.raises(IntegrityError, match=f"registry.json's \\['{field}'\\]"):
            registry.versions("digits")
        with pytest.raises(IntegrityError, match="unsigned index was edited"):
            registry.lineage("digits@2")
    index.write_text(original)
    serving = ModelRegistry(tmp_path, verify_key=private.public_key())
    assert [v["parent"] for v in serving.versions("digits")] == [None, 1]
