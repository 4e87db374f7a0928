"""Transfer-learning helpers: loading, freezing, parameter groups, unfreezing, stored features."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
from torch import nn

from course_lib import transfer
from course_lib.data import Split, digits_splits
from course_lib.glyphs import glyph_dataset
from course_lib.lessons.ch05_transfer_study import (
    CHOSEN_BLOCKS,
    STRATEGIES,
    fine_tune,
    train_strategy,
    transfer_controls,
    transfer_figure,
)
from course_lib.tools.pretrain import pretrain
from course_lib.train import fit
from course_lib.transfer import (
    BUNDLED_SHA256,
    BUNDLED_WEIGHTS,
    GradualUnfreezing,
    WeightsUnavailable,
    extract_features,
    fit_linear_head,
    freeze,
    load_backbone,
    param_groups,
    parameter_summary,
    reestimate_batchnorm,
    replace_head,
    trainable_parameters,
    unfreeze,
    unfreeze_batchnorm,
)


@pytest.fixture(scope="module")
def digits16():
    return digits_splits(size=16, seed=0)


def _batchnorm_statistics(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k}


def _parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _one_epoch(model: nn.Module, data: Split, params) -> None:
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    fit(
        model,
        data,
        optimizer=optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        epochs=1,
        batch_size=16,
        progress=False,
    )


# --- loading ---------------------------------------------------------------------------------


def test_bundled_backbone_matches_its_recorded_hash_and_has_torchvision_names():
    assert hashlib.sha256(BUNDLED_WEIGHTS.read_bytes()).hexdigest() == BUNDLED_SHA256
    assert BUNDLED_WEIGHTS.stat().st_size < 3_000_000  # a few MB at most
    model = load_backbone("bundled")
    names = [name for name, _ in model.named_children()]
    assert names == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
        "fc",
    ]
    # the source articles' own code runs unchanged
    model.fc = nn.Linear(model.fc.in_features, 10)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)
    assert len(list(model.layer4.parameters())) > 0


def test_bundled_backbone_is_pretrained_it_recognises_glyphs():
    model = load_backbone("bundled").eval()
    glyphs = glyph_dataset(2, seed=1)  # the validation draw of `course pretrain`
    with torch.no_grad():
        accuracy = (model(glyphs.inputs).argmax(1) == glyphs.targets).float().mean()
    assert accuracy > 0.6  # chance is 0.001
    scratch = load_backbone("small_resnet").eval()
    with torch.no_grad():
        assert (scratch(glyphs.inputs).argmax(1) == glyphs.targets).float().mean() < 0.05


def test_a_changed_bundled_file_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / BUNDLED_WEIGHTS.name
    content = bytearray(BUNDLED_WEIGHTS.read_bytes())
    content[-100] ^= 0x01  # one bit of one weight
    copy.write_bytes(bytes(content))
    monkeypatch.setattr(transfer, "BUNDLED_WEIGHTS", copy)
    with pytest.raises(ValueError, match="changed or damaged.*course pretrain"):
        load_backbone("bundled")
    monkeypatch.setattr(transfer, "BUNDLED_WEIGHTS", tmp_path / "missing.safetensors")
    with pytest.raises(WeightsUnavailable, match="course pretrain"):
        load_backbone("bundled")


def test_unknown_backbones_and_weights_say_what_exists():
    with pytest.raises(ValueError, match="resnet18"):
        load_backbone("resnet50")
    with pytest.raises(ValueError, match="'imagenet'"):
        load_backbone("resnet18", weights="IMAGENET1K_V2")
    with pytest.raises(ValueError, match="glyph"):
        load_backbone("bundled", weights="imagenet")


def test_imagenet_weights_offline_give_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsUnavailable) as error:
        load_backbone("resnet18", weights="imagenet")
    message = str(error.value)
    assert "course weights fetch resnet18" in message and "load_backbone('bundled')" in message
    assert str(tmp_path) in message and "\n" not in message  # one sentence


def test_the_imagenet_file_is_pinned_in_full():
    assert transfer.imagenet_weights_path().name == "resnet18-f37072fd.pth"
    assert transfer.RESNET18_IMAGENET_SIZE == 46_830_571
    digest = transfer.RESNET18_IMAGENET_SHA256
    assert len(digest) == 64 and int(digest, 16) >= 0  # 256 bits, not the name's 32
    assert digest.startswith("f37072fd")  # what the file name promises


def _stand_in_imagenet_file(tmp_path, monkeypatch):
    """A resnet18 with random weights, saved where torch's cache keeps the ImageNet file."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    path = transfer.imagenet_weights_path()
    assert path.parent == tmp_path / "checkpoints" and path.name.startswith("resnet18-")
    path.parent.mkdir()
    torch.manual_seed(3)
    original = load_backbone("resnet18")  # random weights, standing in for ImageNet's
    torch.save(original.state_dict(), path)
    return path, original


def test_imagenet_weights_are_read_from_torchs_cache_when_size_and_hash_match(
    tmp_path, monkeypatch
):
    path, original = _stand_in_imagenet_file(tmp_path, monkeypatch)
    content = path.read_bytes()
    monkeypatch.setattr(transfer, "RESNET18_IMAGENET_SIZE", len(content))
    monkeypatch.setattr(transfer, "RESNET18_IMAGENET_SHA256", hashlib.sha256(content).hexdigest())
    loaded = load_backbone("resnet18", weights="imagenet")
    assert torch.equal(loaded.fc.weight, original.fc.weight)
    assert torch.equal(loaded.layer4[1].bn2.running_var, original.layer4[1].bn2.running_var)


def test_an_imagenet_file_of_another_size_or_hash_is_refused(tmp_path, monkeypatch):
    path, _ = _stand_in_imagenet_file(tmp_path, monkeypatch)
    content = path.read_bytes()
    with pytest.raises(ValueError, match="46,830,571") as error:  # the real pins: wrong size
        load_backbone("resnet18", weights="imagenet")
    assert "not the official one" in str(error.value) and "download it again" in str(error.value)
    monkeypatch.setattr(transfer, "RESNET18_IMAGENET_SIZE", len(content))
    real = transfer.RESNET18_IMAGENET_SHA256
    with pytest.raises(ValueError, match=f"expected {real[:16]}"):  # right size, wrong hash
        load_backbone("resnet18", weights="imagenet")
    # the same first 32 bits are not enough: only the full digest is accepted
    digest = hashlib.sha256(content).hexdigest()
    near_miss = digest[:8] + ("0" if digest[8] != "0" else "1") + digest[9:]
    monkeypatch.setattr(transfer, "RESNET18_IMAGENET_SHA256", near_miss)
    with pytest.raises(ValueError, match="not the official one"):
        load_backbone("resnet18", weights="imagenet")


def test_pretraining_is_seeded_byte_for_byte(tmp_path):
    settings = {"epochs": 1, "per_class": 3, "classes": 20, "progress": False}
    first = pretrain(tmp_path / "a.safetensors", **settings)
    second = pretrain(tmp_path / "b.safetensors", **settings)
    assert first["sha256"] == second["sha256"]
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    other = pretrain(tmp_path / "c.safetensors", seed=1, **settings)
    assert other["sha256"] != first["sha256"]


def test_glyphs_are_seeded_images_in_range():
    glyphs = glyph_dataset(3, classes=50, size=16, seed=0)
    assert (
        glyphs.inputs.shape == (150, 1, 16, 16) and glyphs.targets.bincount().tolist() == [3] * 50
    )
    assert glyphs.inputs.min() >= 0 and glyphs.inputs.max() <= 1
    assert torch.equal(glyphs.inputs, glyph_dataset(3, classes=50, size=16, seed=0).inputs)
    assert not torch.equal(glyphs.inputs, glyph_dataset(3, classes=50, size=16, seed=1).inputs)
    assert glyph_dataset(1, classes=5, size=8).inputs.shape == (5, 1, 8, 8)
    with pytest.raises(ValueError):
        glyph_dataset(0)


# --- heads, freezing and what trains ---------------------------------------------------------------


def test_replace_head_keeps_the_embedding_size():
    model = replace_head(load_backbone("small_resnet"), 7)
    assert (model.fc.in_features, model.fc.out_features) == (128, 7)
    with pytest.raises(ValueError, match="positive whole number"):
        replace_head(model, 0)
    with pytest.raises(ValueError, match="fc"):
        replace_head(nn.Sequential(nn.Linear(2, 2)), 3)


def test_freeze_then_unfreeze_counts_and_names():
    model = replace_head(load_backbone("bundled"), 10)
    everything = trainable_parameters(model)
    freeze(model)
    assert trainable_parameters(model) == 0
    unfreeze(model, "layer4", "fc")
    expected = sum(p.numel() for p in [*model.layer4.parameters(), *model.fc.parameters()])
    assert trainable_parameters(model) == expected < everything
    summary = parameter_summary(model)
    assert "layer4" in summary and f"{expected:,}" in summary and "kept (frozen)" in summary
    unfreeze(model)
    assert trainable_parameters(model) == everything
    with pytest.raises(ValueError, match="layer4"):
        unfreeze(model, "layer5")


def test_frozen_parameters_do_not_change_during_an_epoch(digits16):
    model = replace_head(load_backbone("bundled"), 10)
    freeze(model)
    unfreeze(model, "layer4", "fc")
    before = _parameters(model)
    _one_epoch(model, digits16[0], [p for p in model.parameters() if p.requires_grad])
    after = _parameters(model)
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed == name.startswith(("layer4", "fc")), name


def test_frozen_batchnorm_keeps_its_statistics_even_in_train_mode(digits16):
    model = replace_head(load_backbone("bundled"), 10)
    freeze(model)
    unfreeze(model, "layer4", "fc")
    frozen_before = _batchnorm_statistics(model.layer3)
    trained_before = _batchnorm_statistics(model.layer4)
    _one_epoch(model, digits16[0], [p for p in model.parameters() if p.requires_grad])
    for name, value in _batchnorm_statistics(model.layer3).items():
        assert torch.equal(value, frozen_before[name]), name
    assert any(
        not torch.equal(v, trained_before[k])
        for k, v in _batchnorm_statistics(model.layer4).items()
    )


def test_requires_grad_false_alone_lets_batchnorm_statistics_drift(digits16):
    """The misconception the course corrects: this is what freeze() guards against."""
    model = replace_head(load_backbone("bundled"), 10)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith("fc")
    before = _batchnorm_statistics(model.layer3)
    _one_epoch(model, digits16[0], model.fc.parameters())
    assert any(
        not torch.equal(v, before[k]) for k, v in _batchnorm_statistics(model.layer3).items()
    )


def test_param_groups_give_each_block_its_rate_and_freeze_the_rest():
    model = replace_head(load_backbone("bundled"), 10)
    groups = param_groups(model, {"fc": 1e-2, "layer4": 1e-3})
    assert [(g["name"], g["lr"]) for g in groups] == [("fc", 1e-2), ("layer4", 1e-3)]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.layer4.parameters()}
    assert trainable_parameters(model) == sum(p.numel() for g in groups for p in g["params"])
    assert not any(p.requires_grad for p in model.layer3.parameters())
    optimizer = torch.optim.AdamW(groups)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-2, 1e-3]
    with pytest.raises(ValueError, match="overlaps"):
        param_groups(model, {"layer4": 1e-3, "layer4.0": 1e-4})
    with pytest.raises(ValueError, match="positive"):
        param_groups(model, {"fc": -1})
    with pytest.raises(ValueError, match="at least one"):
        param_groups(model, {})


def test_gradual_unfreezing_follows_its_schedule(digits16):
    model = replace_head(load_backbone("bundled"), 10)
    groups = param_groups(model, {"fc": 1e-3, "layer4": 1e-3, "layer3": 1e-4})
    schedule = GradualUnfreezing(model, {0: ["fc"], 1: ["layer4"], 2: ["layer3"]})
    assert trainable_parameters(model) == sum(p.numel() for p in model.fc.parameters())
    layer4, layer3 = _parameters(model.layer4), _parameters(model.layer3)
    small = Split(digits16[0].inputs[:64], digits16[0].targets[:64])
    optimizer = torch.optim.Adam(groups)
    loss = nn.CrossEntropyLoss()
    fit(
        model,
        small,
        optimizer=optimizer,
        loss_fn=loss,
        epochs=1,
        callbacks=[schedule],
        progress=False,
    )
    assert all(torch.equal(v, layer4[k]) for k, v in _parameters(model.layer4).items())
    assert schedule.unfrozen == ["fc", "layer4"]  # layer4 trains from the second epoch on
    fit(
        model,
        small,
        optimizer=optimizer,
        loss_fn=loss,
        epochs=2,
        callbacks=[schedule],
        progress=False,
    )
    assert schedule.unfrozen == ["fc", "layer4", "layer3"]
    assert any(not torch.equal(v, layer4[k]) for k, v in _parameters(model.layer4).items())
    assert all(torch.equal(v, layer3[k]) for k, v in _parameters(model.layer3).items())
    restored = GradualUnfreezing(model, {0: ["fc"]})
    restored.load_state_dict(schedule.state_dict())
    assert restored.unfrozen == schedule.unfrozen
    with pytest.raises(ValueError, match="from the start"):
        GradualUnfreezing(model, {2: ["layer4"]})
    with pytest.raises(ValueError, match="list of block names"):
        GradualUnfreezing(model, {0: "fc"})


def test_extract_features_are_what_the_head_sees(digits16):
    model = replace_head(load_backbone("bundled"), 10)
    model.train()
    test = digits16[2]
    features = extract_features(model, test)
    assert features.inputs.shape == (len(test), 128) and torch.equal(features.targets, test.targets)
    assert isinstance(model.fc, nn.Linear) and model.training  # put back as it was
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.fc(features.inputs), model(test.inputs), atol=1e-5)
    assert torch.equal(extract_features(model, test.inputs), features.inputs)
    with pytest.raises(TypeError, match="Split or a tensor"):
        extract_features(model, [1, 2, 3])


# --- the chapter's experiment -----------------------------------------------------------------------


def test_cached_features_train_the_same_head_as_the_live_backbone(digits16):
    train, val, test = digits16
    small = Split(train.inputs[:50], train.targets[:50])
    live = train_strategy("features (live)", small, val, test, steps=20)
    cached = train_strategy("features (cached)", small, val, test, steps=20)
    assert live.trainable == cached.trainable == 1290
    assert abs(live.test_accuracy - cached.test_accuracy) < 0.01
    with pytest.raises(ValueError, match="scratch"):
        train_strategy("fine-tune", small, val, test)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_trains_and_reports(digits16, strategy):
    train, val, test = digits16
    small = Split(train.inputs[:40], train.targets[:40])
    run = train_strategy(strategy, small, val, test, steps=8, curve_every=4)
    assert 0 <= run.test_accuracy <= 1 and run.trainable > 0 and run.seconds_per_epoch > 0
    assert [step for step, _ in run.curve] == [4, 8]


def test_the_explorer_trains_what_its_controls_say(digits16):
    controls = transfer_controls()
    assert set(controls.values()) == {"strategy", "blocks", "per_class", "lr"}
    offered = [strategy for _, strategy in controls["strategy"].options]
    # live features compute what cached ones do, slower; "layer4 + fc" becomes any chosen blocks
    assert offered == [
        "scratch",
        "features (cached)",
        CHOSEN_BLOCKS,
        "all, per-block lr",
        "gradual unfreezing",
    ]
    title = transfer_figure(digits16, **controls.values(), steps=10).axes[0].get_title()
    assert title.startswith("fine-tune layer4 + fc, 5 labels/class")
    controls["blocks"].value = ("layer3", "layer4")
    title = transfer_figure(digits16, **controls.values(), steps=10).axes[0].get_title()
    assert "fine-tune layer3 + layer4 + fc" in title
    controls["blocks"].value = ()
    title = transfer_figure(digits16, **controls.values(), steps=10).axes[0].get_title()
    assert "fine-tune fc" in title and "1,290 parameters" in title
    controls["strategy"].value = "scratch"
    title = transfer_figure(digits16, **controls.values(), steps=10).axes[0].get_title()
    assert title.startswith("scratch") and "308,538 parameters" in title


def test_copying_the_bundled_file_elsewhere_keeps_it_loadable(tmp_path, monkeypatch):
    copy = tmp_path / "copy.safetensors"
    shutil.copy(BUNDLED_WEIGHTS, copy)
    monkeypatch.setattr(transfer, "BUNDLED_WEIGHTS", copy)
    assert isinstance(load_backbone("bundled"), transfer.SmallResNet)


def test_a_strategy_says_what_it_trains_and_keeps_its_ratios_at_another_head_rate():
    strategy = fine_tune("layer3", "layer4")
    assert strategy.name == "layer3 + layer4 + fc" and strategy.pretrained
    model = replace_head(load_backbone("bundled"), 10)
    groups = strategy.parameter_groups(model, lr=1e-2)
    assert {group["name"]: group["lr"] for group in groups} == {
        "fc": 1e-2,
        "layer3": 1e-2,
        "layer4": 1e-2,
    }
    assert not any(p.requires_grad for p in model.layer2.parameters())  # not named: frozen


# --- a head to convergence, and BatchNorm's statistics ---------------------------------------------


def test_fit_linear_head_reaches_the_minimum_of_its_objective(digits16):
    features = extract_features(load_backbone("bundled"), Split(*_first(digits16[0], 200)))
    head = fit_linear_head(features, 10, weight_decay=1e-2)
    assert isinstance(head, nn.Linear) and head.weight.shape == (10, 128)
    loss = nn.functional.cross_entropy(head(features.inputs), features.targets)
    loss = loss + 0.5 * 1e-2 * head.weight.pow(2).sum()
    gradients = torch.autograd.grad(loss, list(head.parameters()))
    assert max(g.abs().max().item() for g in gradients) < 1e-4  # a stationary point: the optimum
    again = fit_linear_head(features, 10, weight_decay=1e-2)  # no seed involved: the same head
    assert torch.equal(again.weight, head.weight)
    shifted = nn.Linear(128, 10)  # the bias is not penalised: a constant added to every bias
    shifted.load_state_dict({"weight": head.weight, "bias": head.bias + 3.0})
    with torch.no_grad():  # changes neither the objective nor any prediction
        assert torch.allclose(
            nn.functional.cross_entropy(shifted(features.inputs), features.targets),
            nn.functional.cross_entropy(head(features.inputs), features.targets),
            atol=1e-5,
        )
        assert torch.equal(shifted(features.inputs).argmax(1), head(features.inputs).argmax(1))
    with pytest.raises(ValueError, match="embeddings"):
        fit_linear_head(digits16[0], 10)
    with pytest.raises(ValueError, match="weight_decay"):
        fit_linear_head(features, 10, weight_decay=-1)


def _first(split: Split, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return split.inputs[:n], split.targets[:n]


def test_reestimate_batchnorm_stores_the_statistics_of_the_target_inputs(digits16):
    inputs = digits16[0].inputs[:100]
    model = freeze(load_backbone("bundled"))  # frozen: the hook must not keep it in eval mode
    model.eval()
    momentum = model.bn1.momentum
    reestimate_batchnorm(model, inputs)
    with torch.no_grad():
        first = model.conv1(inputs)  # what the first BatchNorm layer receives
    assert torch.allclose(model.bn1.running_mean, first.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(
        model.bn1.running_var, first.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6
    )
    assert model.bn1.momentum == momentum and not model.training  # put back as it was
    assert trainable_parameters(model) == 0
    # one batch of all the inputs: eval mode now computes on them what train mode computed
    # (up to the unbiased variance the running statistics store: a factor n / (n - 1))
    with torch.no_grad():
        evaluated = model(inputs)
        unfrozen = load_backbone("bundled").train()
        in_train_mode = unfrozen(inputs)
    assert (evaluated - in_train_mode).norm() < 1e-2 * in_train_mode.norm()
    with pytest.raises(ValueError, match="no BatchNorm"):
        reestimate_batchnorm(nn.Linear(3, 2), torch.zeros(1, 3))


def test_unfreeze_batchnorm_trains_scales_and_shifts_and_follows_train_mode(digits16):
    model = unfreeze(freeze(replace_head(load_backbone("bundled"), 10)), "fc")
    unfreeze_batchnorm(model)
    batchnorm = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    scales = sum(p.numel() for m in batchnorm for p in m.parameters())
    assert trainable_parameters(model) == 1290 + scales
    assert not model.conv1.weight.requires_grad and not model.layer4[0].conv1.weight.requires_grad
    before = _batchnorm_statistics(model)
    _one_epoch(
        model, Split(*_first(digits16[0], 64)), [p for p in model.parameters() if p.requires_grad]
    )
    after = _batchnorm_statistics(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # train mode: they move
    assert "updated in train mode" in parameter_summary(model)
