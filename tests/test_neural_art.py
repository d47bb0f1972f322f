"""The neural_art family: procedural images, fixed random features, the contract, and a tiny
meta-training through the CLI and the registry evaluated at 2× resolution and on held-out styles."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from l2l_neural_art import (
    HELD_OUT_STYLES,
    STYLES,
    TRAINING_STYLES,
    NeuralArtFamily,
    content_image,
    gram,
    random_filters,
    style_image,
)
from l2l_neural_art.family import STYLE_STREAM
from l2l_plugin import check_family, discover_families, make_family
from l2l_plugin.cli import main as l2l_main
from l2l_plugin.families import seeded_generator
from l2l_registry import load_optimizer
from l2l_registry import store as store_module

from helpers import TINY_META

# 16×16 images, two small filter banks: milliseconds per step.
TINY = {"resolution": 16, "kernel_sizes": [3, 5], "channels": 4}


@pytest.fixture(autouse=True)
def _one_thread():
    # Convolutions this small are 25× slower on two intra-op threads when the cores are busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_neural_art_is_discovered_and_conforms():
    entry = discover_families()["neural_art"]
    assert entry.error is None and entry.distribution.startswith("l2l-neural-art")
    assert entry.schema()["properties"]["styles"]["items"]["enum"] == list(STYLES)
    check_family(make_family("neural_art", TINY))
    check_family(make_family("neural_art", {**TINY, "styles": list(HELD_OUT_STYLES)}))


def test_training_and_held_out_styles_split_the_styles():
    assert set(TRAINING_STYLES) | set(HELD_OUT_STYLES) == set(STYLES)
    assert not set(TRAINING_STYLES) & set(HELD_OUT_STYLES)
    assert NeuralArtFamily().styles == TRAINING_STYLES


@pytest.mark.parametrize("name", STYLES)
def test_every_style_is_a_seeded_textured_rgb_image(name):
    image = style_image(name, 32, seeded_generator(4))
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert image.std() > 0.05  # a texture, not a flat colour
    assert torch.equal(image, style_image(name, 32, seeded_generator(4)))
    assert not torch.equal(image, style_image(name, 32, seeded_generator(5)))


@pytest.mark.parametrize("name", [*STYLES, "content"])
def test_a_seed_is_the_same_picture_at_twice_the_resolution(name):
    def draw(side: int) -> torch.Tensor:
        if name == "content":
            return content_image(side, seeded_generator(9))
        return style_image(name, side, seeded_generator(9))

    small, large = draw(64), draw(128)
    # 2×2 averages of the 128-pixel picture against the 64-pixel one: close but for edges,
    # and much closer than a different seed's picture is.
    downsampled = F.avg_pool2d(large.unsqueeze(0), 2)[0]
    other = style_image("stripes", 64, seeded_generator(10)) if name != "content" else content_image(64, seeded_generator(10))
    assert (downsampled - small).abs().mean() < 0.3 * (other - small).abs().mean()


def test_the_random_features_are_fixed_by_their_seed():
    first = random_filters(0, (3, 5), 4)
    assert [bank.shape for bank in first] == [(4, 3, 3, 3), (4, 3, 5, 5)]
    assert all(torch.allclose(bank.flatten(1).norm(dim=1), torch.ones(4)) for bank in first)
    assert all(torch.equal(a, b) for a, b in zip(first, random_filters.__wrapped__(0, (3, 5), 4)))
    assert not torch.equal(first[0], random_filters(1, (3, 5), 4)[0])
    # A different feature seed is a different loss on the same images.
    a = NeuralArtFamily(**TINY).sample(3)
    b = NeuralArtFamily(**TINY, feature_seed=1).sample(3)
    params = a.init_params()
    assert not torch.isclose(a.loss(params), b.loss(params))


def test_gram_matrices_average_over_pixels():
    maps = torch.rand(2, 3, 8, 8)
    g = gram(maps)
    assert g.shape == (2, 3, 3)
    assert torch.allclose(g[1, 0, 2], (maps[1, 0] * maps[1, 2]).mean())
    # A tiled image has the same Gram matrix: statistics, not positions.
    assert torch.allclose(gram(maps.repeat(1, 1, 2, 2)), g, atol=1e-6)


def test_tasks_vary_with_the_seed_and_the_style_set():
    family = NeuralArtFamily(**TINY)
    assert not torch.equal(family.sample(0).content, family.sample(1).content)
    held_out = NeuralArtFamily(**{**TINY, "styles": ["rings"]})
    generator = seeded_generator(2, STYLE_STREAM)
    torch.randint(1, (), generator=generator)  # the task's draw of its style among one
    assert torch.equal(held_out.sample(2).style, style_image("rings", 16, generator))
    assert not torch.equal(held_out.sample(2).style, family.sample(2).style)
    assert family.sample(0).init_params()["image"].shape == (3, 16, 16)
    assert NeuralArtFamily(**{**TINY, "resolution": 32}).sample(0).init_params()["image"].shape == (3, 32, 32)


def test_adam_makes_progress_and_both_terms_matter():
    family = NeuralArtFamily(**TINY)
    stack = family.sample_stack([0, 1, 2, 3])
    image = stack.init_params()["image"].requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=0.05)
    start = stack.losses({"image": image}).detach()
    for _ in range(60):
        optimizer.zero_grad()
        stack.losses({"image": image}).sum().backward()
        optimizer.step()
    end = stack.losses({"image": image}).detach()
    assert (end < 0.5 * start).all(), (start, end)
    # Neither weight is inert: dropping either term changes the loss of the same image.
    for weights in ({"content_weight": 0.0}, {"style_weight": 0.0}):
        other = NeuralArtFamily(**TINY, **weights).sample_stack([0, 1, 2, 3])
        assert (other.losses({"image": image.detach()}) < end).all()


def test_bad_configs_are_field_errors():
    with pytest.raises(ValidationError) as info:
        NeuralArtFamily(styles=["stripes", "mosaic"], kernel_sizes=[4], resolution=4)
    locations = {error["loc"][0] for error in info.value.errors()}
    assert locations == {"styles", "kernel_sizes", "resolution"}
    assert "stripes" in str(info.value) and "cells" in str(info.value)  # the valid styles are listed
    with pytest.raises(ValidationError, match="both 0"):
        NeuralArtFamily(content_weight=0, style_weight=0)


def test_defaults_name_the_l2l_preset():
    defaults = NeuralArtFamily.meta_train_defaults
    assert defaults["preset"] == "l2l"
    from l2l_plugin.training import MetaTrainConfig
    from l2l_plugin.training.presets import meta_train_recipe

    config = MetaTrainConfig.model_validate(meta_train_recipe(defaults, {}))
    assert config.network.nominal == "adam" and config.max_seconds is not None


# -- through the CLI and the registry --------------------------------------------------------


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    import mlflow

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(store_module.DATA_DIR_ENV, str(tmp_path / "mlflow"))
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    store_module._applied_default = None
    yield tmp_path / "mlflow"
    mlflow.set_tracking_uri(None)
    store_module._applied_default = None


def _args(flag: str, values: dict) -> list[str]:
    pairs = []
    for key, value in values.items():
        if isinstance(value, dict):
            pairs += [f"{key}.{k}={json.dumps(v)}" for k, v in value.items()]
        else:
            pairs.append(f"{key}={json.dumps(value)}")
    return [part for pair in pairs for part in (flag, pair)]


def test_meta_train_register_and_evaluate_at_2x_and_on_held_out_styles(store_dir, tmp_path, capsys):
    out = tmp_path / "run"
    meta = {**{k: v for k, v in TINY_META.items() if k != "evaluation"}, "meta_batch_size": 4,
            "evaluation": {**TINY_META["evaluation"], "lr_min": 1e-3, "lr_max": 0.1, "baselines": ["sgd", "adam"]}}
    argv = ["meta-train", "neural_art", "--out", str(out), "--register", "--quiet"]
    assert l2l_main(argv + _args("--set", TINY) + _args("--meta", meta)) == 0
    assert "registered l2l-neural_art version 1" in capsys.readouterr().out
    trained = json.loads((out / "evaluation.json").read_text())
    assert trained["family_config"]["resolution"] == 16

    for variant in ({"resolution": 32}, {"styles": list(HELD_OUT_STYLES)}):
        assert l2l_main(
            ["evaluate", str(out / "optimizer"), "--out", str(tmp_path / "eval"), "--quiet"]
            + _args("--set", {**TINY, **variant})
        ) == 0
        report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
        for key, value in variant.items():
            assert report["family_config"][key] == value
        assert {"learned", "sgd", "adam"} <= set(report["optimizers"])
        assert all(r["final_loss_mean"] == r["final_loss_mean"] for r in report["optimizers"].values())  # no NaN

    # The registered version optimises a 2×-resolution image as a torch.optim.Optimizer.
    task = NeuralArtFamily(**{**TINY, "resolution": 32}).sample(777)
    image = task.init_params()["image"].requires_grad_(True)
    optimizer = load_optimizer("models:/l2l-neural_art/1", [image], family="neural_art")
    start = task.loss({"image": image}).item()
    for _ in range(10):
        optimizer.zero_grad()
        loss = task.loss({"image": image})
        loss.backward()
        optimizer.step(loss=loss)
    assert task.loss({"image": image}).item() < start


def test_the_service_lists_trains_and_registers_neural_art(tmp_path):
    pytest.importorskip("fastapi")
    from test_api_support import TERMINAL, TOKEN, api_client, auth, isolated_mlflow, wait_for

    meta = {**{k: v for k, v in TINY_META.items() if k != "evaluation"}, "meta_batch_size": 2, "meta_iterations": 2,
            "evaluation": {**TINY_META["evaluation"], "test_tasks": 2, "tuning_tasks": 2, "baselines": ["adam"]}}
    with isolated_mlflow(tmp_path / "mlflow"), api_client(tmp_path / "data", workers=1, token=TOKEN) as client:
        listed = client.get("/families/neural_art").json()
        assert listed["error"] is None and listed["defaults"]["resolution"] == 64
        assert listed["meta_train_defaults"]["preset"] == "l2l"
        bad = client.post(
            "/meta-train", json={"family": "neural_art", "family_config": {"styles": ["mosaic"]}}, headers=auth()
        )
        assert bad.status_code == 422 and "styles" in bad.text

        body = {"family": "neural_art", "family_config": TINY, "meta_overrides": meta, "register": True}
        response = client.post("/meta-train", json=body, headers=auth())
        assert response.status_code == 202, response.text
        job = wait_for(
            lambda: client.get(f"/jobs/{response.json()['id']}").json(), lambda j: j["state"] in TERMINAL, 240
        )
        assert job["state"] == "succeeded", job
        assert job["result"]["model_name"] == "l2l-neural_art"
        assert job["result"]["optimizer_uri"] == f"models:/l2l-neural_art/{job['result']['model_version']}"


def test_the_declared_cost_follows_the_resolution_and_the_service_caps_it():
    from l2l_api.limits import cost_errors
    from l2l_api.settings import Settings
    from l2l_plugin.pipeline import resolve_meta_train_config

    small, large = make_family("neural_art", {"resolution": 32}), make_family("neural_art", {"resolution": 64})
    assert large.cost().coordinates == 4 * small.cost().coordinates == 4 * 3 * 32 * 32
    assert large.cost().memory_floats == pytest.approx(4 * small.cost().memory_floats, rel=0.02)  # Gram: fixed size
    assert cost_errors(large, resolve_meta_train_config(large, {}), Settings()) == []
    huge = make_family("neural_art", {"resolution": 512, "channels": 256})
    errors = cost_errors(huge, resolve_meta_train_config(huge, {"evaluation": {"test_tasks": 1000}}), Settings())
    assert errors and "MAX_TASK_MEMORY_MB" in errors[0]["msg"]
