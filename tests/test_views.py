"""Views (labelled augmented copies of the base images) and the storage budget of their labels:
the drawing and making of views against plain references, the budget's arithmetic, and views
through a run, its artifact, `evaluate`, the CLI and every label maker."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from labeldistill import budget
from labeldistill import config as C
from labeldistill.errors import ConfigError
from labeldistill.views import MIX_CODES, MIXES, ViewParams, ViewSpec, apply, draw_params, true_labels

EYE = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def images(n: int = 6, channels: int = 1, height: int = 28, width: int = 28, seed: int = 0) -> torch.Tensor:
    """Real-looking pixels: k / 255, as unresized real images are."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, height, width), generator=g).float() / 255


# ---------------------------------------------------------------------------
# draw_params


@pytest.mark.parametrize("mix", MIXES)
def test_the_same_seed_draws_the_same_views_and_another_seed_others(mix):
    spec = ViewSpec(per_image=5, mix=mix)
    a, b = draw_params(spec, 6, 28, 28, seed=3), draw_params(spec, 6, 28, 28, seed=3)
    assert a.equals(b)
    other = draw_params(spec, 6, 28, 28, seed=4)
    assert not torch.equal(a.theta, other.theta)
    if mix != "none":
        assert not torch.equal(a.sources, other.sources) and not torch.equal(a.weight, other.weight)


@pytest.mark.parametrize("mix", MIXES)
def test_view_k_of_image_i_is_row_i_k_and_the_first_is_the_image_itself(mix):
    n, k = 7, 4
    p = draw_params(ViewSpec(per_image=k, mix=mix), n, 28, 28, seed=0)
    assert len(p) == n * k
    assert torch.equal(p.sources[:, 0], torch.arange(n).repeat_interleave(k))
    assert ((p.sources >= 0) & (p.sources < n)).all()
    orig = torch.arange(n) * k
    assert torch.equal(p.sources[orig, 1], torch.arange(n))
    assert torch.equal(p.weight[orig], torch.ones(n))
    assert torch.equal(p.mix[orig], torch.zeros(n, dtype=torch.uint8))
    assert torch.equal(p.box[orig], torch.zeros(n, 4, dtype=torch.long))
    assert torch.equal(p.theta[orig], EYE.expand(n, 2, 3))
    # every other view is transformed (rotate 15 degrees, scale and translate 0.1 by default)
    rest = torch.ones(n * k, dtype=torch.bool)
    rest[orig] = False
    assert not (p.theta[rest] == EYE).flatten(1).all(1).any()
    assert (p.mix[rest] == MIX_CODES[mix]).all()


def test_without_the_original_every_view_is_drawn():
    p = draw_params(ViewSpec(per_image=3, include_original=False, mix="mixup"), 5, 28, 28, seed=0)
    assert (p.mix == MIX_CODES["mixup"]).all()
    assert not (p.theta == EYE).flatten(1).all(1).any()


def test_unmixed_views_have_one_source_and_weight_one():
    p = draw_params(ViewSpec(per_image=6, mix="none"), 5, 28, 28, seed=1)
    assert torch.equal(p.sources[:, 0], p.sources[:, 1])
    assert torch.equal(p.weight, torch.ones(30)) and (p.mix == 0).all() and (p.box == 0).all()


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_mixing_weights_are_shares(mix):
    p = draw_params(ViewSpec(per_image=20, mix=mix, mix_alpha=0.5), 10, 28, 28, seed=2)
    assert ((p.weight >= 0) & (p.weight <= 1)).all()
    assert (p.weight < 1).sum() > 100  # most of the 190 drawn views are mixed


def test_a_cutmix_weight_is_the_share_of_the_image_outside_its_box():
    height, width = 12, 20  # not square: the box's rows belong to the height, its columns to the width
    p = draw_params(ViewSpec(per_image=30, mix="cutmix"), 8, height, width, seed=5)
    top, bottom, left, right = p.box.unbind(1)
    assert ((0 <= top) & (top <= bottom) & (bottom <= height)).all()
    assert ((0 <= left) & (left <= right) & (right <= width)).all()
    area = ((bottom - top) * (right - left)).double()
    assert torch.equal(p.weight, (1.0 - area / (height * width)).float())
    assert (area > 0).sum() > 100  # the boxes are not empty


def test_views_need_a_positive_count():
    with pytest.raises(ValueError):
        draw_params(ViewSpec(per_image=0), 3, 28, 28, seed=0)


# ---------------------------------------------------------------------------
# apply


def reference_views(base: torch.Tensor, p: ViewParams) -> torch.Tensor:
    """One view at a time: mix (cutmix: paste b's box into a; mixup: a weighted sum), then
    bilinear sampling with replicated edges on the view's affine grid."""
    out = []
    for j in range(len(p)):
        a, b = base[p.sources[j, 0]], base[p.sources[j, 1]]
        if int(p.mix[j]) == MIX_CODES["cutmix"]:
            top, bottom, left, right = p.box[j].tolist()
            mixed = a.clone()
            mixed[:, top:bottom, left:right] = b[:, top:bottom, left:right]
        else:
            w = p.weight[j]
            mixed = w * a + (1 - w) * b
        grid = F.affine_grid(p.theta[j:j + 1], [1, *mixed.shape], align_corners=False)
        out.append(F.grid_sample(mixed[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0])
    return torch.stack(out)


@pytest.mark.parametrize("mix", MIXES)
def test_apply_makes_each_view_as_the_plain_reference_does(mix):
    base = images(5, channels=3, height=16, width=16)
    p = draw_params(ViewSpec(per_image=6, mix=mix, rotate=30, scale=0.2, translate=0.2), 5, 16, 16, seed=7)
    got = apply(base, p, chunk=7)  # chunks that do not divide the views
    assert got.shape == (30, 3, 16, 16)
    torch.testing.assert_close(got, reference_views(base, p), rtol=0, atol=1e-6)
    torch.testing.assert_close(apply(base, p), got, rtol=0, atol=0)  # one chunk or several: the same


def test_the_original_views_are_exact_copies():
    base = images(4)
    p = draw_params(ViewSpec(per_image=5, mix="cutmix"), 4, 28, 28, seed=0)
    views = apply(base, p)
    for i in range(4):
        assert torch.equal(views[i * 5], base[i])
    assert not torch.equal(views[1], base[0])


def test_an_untransformed_mixup_view_is_the_weighted_sum():
    base = images(4)
    spec = ViewSpec(per_image=5, include_original=False, rotate=0, scale=0, translate=0, mix="mixup")
    p = draw_params(spec, 4, 28, 28, seed=1)
    assert (p.theta == EYE).all()
    w = p.weight.view(-1, 1, 1, 1)
    want = w * base[p.sources[:, 0]] + (1 - w) * base[p.sources[:, 1]]
    # bilinear sampling on the identity grid: the pixel centres up to float rounding of the grid
    torch.testing.assert_close(apply(base, p), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dx,dy", [(3, 2), (-4, 1), (0, -5)])
def test_a_whole_pixel_translation_shifts_the_image(dx, dy):
    base = images(1, height=28, width=28)
    h = w = 28
    # affine_grid's coordinates span [-1, 1] over the image: one pixel is 2 / side
    theta = torch.tensor([[[1.0, 0.0, 2.0 * dx / w], [0.0, 1.0, 2.0 * dy / h]]])
    p = ViewParams(torch.zeros(1, 2, dtype=torch.long), torch.ones(1), torch.zeros(1, dtype=torch.uint8),
                   torch.zeros(1, 4, dtype=torch.long), theta)
    view = apply(base, p)[0, 0]
    # view pixel (y, x) is base pixel (y + dy, x + dx) wherever that lies inside the image
    ys, xs = slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))
    src_ys, src_xs = slice(max(0, dy), h + min(0, dy)), slice(max(0, dx), w + min(0, dx))
    torch.testing.assert_close(view[ys, xs], base[0, 0][src_ys, src_xs], rtol=0, atol=1e-5)
    assert not torch.allclose(view, base[0, 0])


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_views_of_normalised_images_are_the_normalised_views(mix):
    pixels = images(5, channels=3, height=16, width=16)
    mean, std = torch.tensor([0.49, 0.48, 0.45]).view(-1, 1, 1), torch.tensor([0.25, 0.24, 0.26]).view(-1, 1, 1)
    p = draw_params(ViewSpec(per_image=8, mix=mix, rotate=40, scale=0.3, translate=0.3), 5, 16, 16, seed=3)
    torch.testing.assert_close(apply((pixels - mean) / std, p), (apply(pixels, p) - mean) / std, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------
# true labels of views


@pytest.mark.parametrize("mix", MIXES)
def test_true_labels_of_views_share_two_classes_in_proportion(mix):
    n, k = 10, 6
    classes = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 3])  # images 3 and 9 share class 3
    p = draw_params(ViewSpec(per_image=k, mix=mix), n, 28, 28, seed=4)
    y = true_labels(p, classes, 10)
    assert y.shape == (n * k, 10)
    torch.testing.assert_close(y.sum(1), torch.ones(n * k), rtol=0, atol=1e-6)
    for i in range(n):
        assert torch.equal(y[i * k], F.one_hot(classes[i], 10).float())
    for j in range(n * k):
        ca, cb = classes[p.sources[j]].tolist()
        w = p.weight[j]
        if ca == cb:
            assert y[j, ca] == 1
        else:
            assert y[j, ca] == w and y[j, cb] == 1 - w
        others = torch.ones(10, dtype=torch.bool)
        others[[ca, cb]] = False
        assert (y[j, others] == 0).all()


# ---------------------------------------------------------------------------
# budget


def test_bytes_per_label():
    assert budget.bytes_per_label(10, "float32") == 40
    assert budget.bytes_per_label(10, "float16") == 20
    assert budget.bytes_per_label(10, "float16", 2) == 2 * (2 + 1)  # values and uint8 class indices
    assert budget.bytes_per_label(10, "float16", 10) == 20  # k of every class: stored dense
    assert budget.bytes_per_label(1000, "float32", 5) == 5 * (4 + 2)  # more than 256 classes: int16 indices


def test_labels_per_image_the_images_budget_allows():
    assert budget.max_labels_per_image(images(1), 10, "float16", 0) == 39  # 784 // 20
    assert budget.max_labels_per_image(images(1, channels=3, height=32, width=32), 10, "float16", 0) == 153
    assert budget.max_labels_per_image(images(1), 10, "float32", 0) == 19
    assert budget.max_labels_per_image(torch.rand(1, 1, 28, 28), 10, "float32", 0) == 78  # float32 pixels


def _views_cfg(per_image: int, **storage) -> C.Config:
    return C.apply(C.Config(), {"views.per_image": per_image, **{f"storage.{k}": v for k, v in storage.items()}})


def test_the_budget_refuses_more_label_bytes_than_image_bytes():
    pixels = images(3)
    with pytest.raises(ConfigError) as info:
        budget.check_budget(_views_cfg(40, label_dtype="float16"), pixels, 10)
    message = str(info.value)
    assert "\n" not in message
    for number in ("views.per_image=40", "800 bytes", "784 bytes", "at most 39 labels of 20 bytes"):
        assert number in message
    budget.check_budget(_views_cfg(39, label_dtype="float16"), pixels, 10)
    budget.check_budget(_views_cfg(40, label_dtype="float16", budget="none"), pixels, 10)
    budget.check_budget(_views_cfg(130, label_dtype="float16", top_k=2), pixels, 10)  # 784 // 6
    with pytest.raises(ConfigError, match="at most 130 labels of 6 bytes"):
        budget.check_budget(_views_cfg(131, label_dtype="float16", top_k=2), pixels, 10)
    budget.check_budget(_views_cfg(0, label_dtype="float32"), pixels, 10)  # no views: one label per image


def test_float16_labels_are_rounded_as_half_precision():
    y = torch.softmax(torch.randn(50, 10) * 3, 1)
    assert torch.equal(budget.compress(y, "float16"), y.half().float())
    assert torch.equal(budget.compress(y), y)


def test_top_k_keeps_the_largest_entries():
    g = torch.Generator().manual_seed(0)
    y = torch.softmax(torch.randn(40, 10, generator=g) * 2, 1)
    k = 3
    values, idx = y.topk(k, dim=1)
    kept = torch.zeros_like(y).scatter_(1, idx, values)
    # 'ce': a distribution again
    torch.testing.assert_close(budget.compress(y, "float32", k, "ce"), kept / kept.sum(1, keepdim=True),
                               rtol=0, atol=0)
    # 'mse': real values as they are
    r = torch.randn(40, 10, generator=g)
    values, idx = r.topk(k, dim=1)
    assert torch.equal(budget.compress(r, "float32", k, "mse"), torch.zeros_like(r).scatter_(1, idx, values))


@pytest.mark.parametrize("label_dtype", ["float32", "float16"])
@pytest.mark.parametrize("top_k", [0, 1, 3])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_compress_is_idempotent_and_pack_stores_exactly_its_output(label_dtype, top_k, loss):
    g = torch.Generator().manual_seed(top_k)
    raw = torch.randn(200, 10, generator=g) * 3
    y = torch.softmax(raw, 1) if loss == "ce" else raw
    once = budget.compress(y, label_dtype, top_k, loss)
    assert torch.equal(budget.compress(once, label_dtype, top_k, loss), once)
    if top_k:
        assert ((once != 0).sum(1) <= top_k).all()
    packed = budget.pack(once, label_dtype, top_k)
    assert all(t.dtype in (budget.LABEL_DTYPES[label_dtype], torch.uint8) for t in packed.values())
    assert torch.equal(budget.unpack(packed, 10), once)
    stored = sum(t.numel() * t.element_size() for t in packed.values())
    assert stored == 200 * budget.bytes_per_label(10, label_dtype, top_k)


# ---------------------------------------------------------------------------
# views through a run, its artifact and evaluate

N = 10  # base images (one per class)
K = 4  # views of each
VIEWS_TINY = {"data.source": "mnist5k", "data.target": "mnist5k", "data.num_base_examples": N,
              "data.target_set_size": 600, "distill.epochs": 1, "distill.batch_size": 300,
              "evaluate.num_test_models": 2, "evaluate.num_val_models": 1, "evaluate.step_grid": [20, 40],
              "evaluate.test_optimizers": [], "views.per_image": K, "teacher.train_epochs": 1}


def views_config(method: str, name: str, **extra) -> C.Config:
    return C.validate(C.apply(C.Config(), {**VIEWS_TINY, "method": method, "name": name, **extra}))


@pytest.fixture(scope="module")
def view_runs(tmp_path_factory):
    """Tiny runs with 4 views of each of 10 embedded MNIST digits: teacher labels in float16, dense
    and top-3; solved real-valued labels ('mse') as their top 5 in float16 (the 5th largest of some is
    negative)."""
    from labeldistill.experiment import run_experiment

    out = tmp_path_factory.mktemp("view_runs")
    runs = {}
    for name, method, extra in (
            ("fp16", "baseline-kd", {"storage.label_dtype": "float16"}),
            ("top3", "baseline-kd", {"storage.label_dtype": "float16", "storage.top_k": 3}),
            ("mse_top5", "label-solve", {"storage.label_dtype": "float16", "storage.top_k": 5, "evaluate.loss": "mse",
                                         "solve.num_networks": 1, "solve.target_size": 100})):
        cfg = views_config(method, name, **extra)
        runs[name] = (cfg, run_experiment(cfg, out=str(out), device="cpu", handle_signals=False), out / name)
    return runs


def test_a_run_labels_every_view_and_counts_its_storage(view_runs):
    cfg, result, run_dir = view_runs["fp16"]
    assert result["labels"].shape == (N * K, 10)
    assert result["views"]["num_views"] == N * K and result["views"]["per_image"] == K
    assert result["views"]["seed"] == cfg.seed and result["views"]["mix"] == cfg.views.mix
    assert result["storage"] == {"num_images": N, "image_dtype": "uint8", "image_bytes": N * 784,
                                 "num_labels": N * K, "label_dtype": "float16", "label_bytes": N * K * 10 * 2,
                                 "labels_per_image": float(K), "total_bytes": N * 784 + N * K * 10 * 2,
                                 "budget": "images"}
    # the labels are the stored ones: float16 values, distributions
    assert torch.equal(result["labels"], result["labels"].half().float())
    torch.testing.assert_close(result["labels"].sum(1), torch.ones(N * K), rtol=0, atol=1e-2)
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["storage"] == result["storage"] and saved["views"] == result["views"]
    assert torch.equal(torch.tensor(saved["labels"]), result["labels"])

    _, top, _ = view_runs["top3"]
    assert top["storage"]["label_bytes"] == N * K * 3 * (2 + 1) and top["storage"]["label_top_k"] == 3
    assert ((top["labels"] != 0).sum(1) <= 3).all()
    torch.testing.assert_close(top["labels"].sum(1), torch.ones(N * K), rtol=0, atol=1e-2)


@pytest.mark.parametrize("name", ["fp16", "top3", "mse_top5"])
def test_the_artifact_holds_the_runs_views_and_labels(view_runs, name):
    from labeldistill.artifact import load_distilled
    from labeldistill.data import prepare
    from labeldistill.views import make_views

    cfg, result, run_dir = view_runs[name]
    ds = load_distilled(run_dir)
    assert len(ds) == N * K and ds.base_images.shape == (N, 1, 28, 28)
    assert torch.equal(ds.labels, result["labels"])
    if cfg.evaluate.loss == "mse":  # kept negative entries are stored too
        assert (ds.labels < 0).any()
    assert torch.equal(ds.images, apply(ds.base_images, ds.views.params))
    assert ds.views.params.equals(draw_params(ViewSpec.from_dict(result["views"]), N, 28, 28, cfg.seed))
    # exactly the views the run labelled and tested on
    data = prepare(cfg, "cpu")
    assert torch.equal(ds.base_images, data.base_x)
    assert torch.equal(ds.images, make_views(cfg, data.base_x).images)
    card = ds.card
    assert card["num_examples"] == N * K and card["num_base_images"] == N and card["storage"] == result["storage"]
    top_k = cfg.storage.top_k
    assert card["labels"]["dtype"] == "float16" and card["labels"]["top_k"] == top_k
    stored = {k: card["tensors"][k]["dtype"] for k in ("labels", "label_values", "label_indices")
              if k in card["tensors"]}
    assert stored == ({"label_values": "float16", "label_indices": "uint8"} if top_k else {"labels": "float16"})


@pytest.mark.parametrize("name", ["fp16", "top3", "mse_top5"])
def test_evaluate_on_the_artifact_reproduces_the_runs_accuracies(view_runs, name):
    from labeldistill.artifact import evaluate_artifact, load_distilled

    _, result, run_dir = view_runs[name]
    r = evaluate_artifact(load_distilled(run_dir))
    assert r["seeds"] == result["seeds"]["test_models"]
    assert r["recipe"]["num_steps"] == result["num_steps"]
    assert r["test_accuracy"] == result["test_accuracy"]


def _copy_run(view_runs, tmp_path, name="fp16"):
    import shutil

    copy = tmp_path / name
    shutil.copytree(view_runs[name][2], copy)
    return copy


def _rewrite_tensors(path, mutate) -> None:
    """Change a tensor and fix every checksum on the card, as a careful tool would: only the
    views' own check can tell."""
    from safetensors.torch import load, save

    from labeldistill.artifact import CARD_FILE, TENSOR_FILE, tensor_sha256

    tensors = load((path / TENSOR_FILE).read_bytes())
    mutate(tensors)
    blob = save(tensors)
    (path / TENSOR_FILE).write_bytes(blob)
    card = json.loads((path / CARD_FILE).read_text())
    card["tensor_file_sha256"] = hashlib.sha256(blob).hexdigest()
    for k, t in tensors.items():
        card["tensors"][k]["sha256"] = tensor_sha256(t)
    (path / CARD_FILE).write_text(json.dumps(card))


def _edit_card(path, edit) -> None:
    from labeldistill.artifact import CARD_FILE

    card = json.loads((path / CARD_FILE).read_text())
    edit(card)
    (path / CARD_FILE).write_text(json.dumps(card))


def _shift_theta(t):
    t["view_theta"][1, 0, 2] += 0.25


def _move_box(t):
    t["view_box"][2] = torch.tensor([0, 5, 0, 5])


ALTERED = {
    "a view's translation": (lambda p: _rewrite_tensors(p, _shift_theta), "stored view parameters differ"),
    "a view's box": (lambda p: _rewrite_tensors(p, _move_box), "stored view parameters differ"),
    "the card's seed": (lambda p: _edit_card(p, lambda c: c["views"].update(seed=c["views"]["seed"] + 1)),
                        "stored view parameters differ"),
    "the card's rotation": (lambda p: _edit_card(p, lambda c: c["views"].update(rotate=5.0)),
                            "stored view parameters differ"),
    "a view parameter dropped": (lambda p: _rewrite_tensors(p, lambda t: t.pop("view_box")), "view_box"),
}


@pytest.mark.parametrize("how", list(ALTERED))
def test_altered_views_are_a_one_line_error(view_runs, tmp_path, how):
    from labeldistill.artifact import load_distilled
    from labeldistill.errors import DataError

    path = _copy_run(view_runs, tmp_path)
    load_distilled(path)  # intact
    alter, message = ALTERED[how]
    alter(path)
    with pytest.raises(DataError, match=message) as info:
        load_distilled(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("edit,message", [
    (lambda r: r.update(labels=r["labels"][:-1]), "39 labels but 40 views of 10 base images"),
    (lambda r: r["views"].update(num_views=36), "40 labels but 36 views"),
    (lambda r: r["views"].update(per_image=3), "40 labels but 40 views of 10 base images"),
    (lambda r: r.pop("views"), "40 labels but 10 base_indices"),
])
def test_a_result_whose_labels_do_not_match_its_views_is_refused(view_runs, edit, message):
    from labeldistill.errors import RunFileError
    from labeldistill.runfiles import check_result

    path = view_runs["fp16"][2] / "result.json"
    result = json.loads(path.read_text())
    check_result(json.loads(path.read_text()), path)  # as written
    edit(result)
    with pytest.raises(RunFileError, match=message) as info:
        check_result(result, path)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# config errors through the CLI

TINY_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "tiny" / "mnist5k_baseline.yaml")


@pytest.mark.parametrize("settings,message", [
    (["views.mix=bad"], "views.mix must be one of none, mixup, cutmix, got 'bad'"),
    (["views.per_image=-1"], "views.per_image must be a whole number >= 0, got -1"),
    (["views.scale=1.5"], "views.scale must be in [0, 1), got 1.5"),
    (["storage.label_dtype=float64"], "storage.label_dtype must be one of float32, float16, got 'float64'"),
    (["storage.budget=x"], "storage.budget must be one of images, none, got 'x'"),
    (["storage.top_k=-2"], "storage.top_k must be 0"),
    (["method=dd-rr", "views.per_image=2"], "views label real base images, and dd-rr learns synthetic images"),
    # 784 bytes of a 28x28 uint8 image hold 19 float32 labels of 10 classes
    (["views.per_image=20"], "views.per_image=20 labels per image take 800 bytes, more than the 784 bytes of one "
                             "stored base image (at most 19 labels of 40 bytes)"),
])
def test_bad_views_or_storage_settings_are_one_line_errors(tmp_path, capsys, settings, message):
    from labeldistill.cli import main

    argv = ["run", TINY_CONFIG, "--out", str(tmp_path / "out"), "--quiet"]
    for s in settings:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("labeldistill: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err
    # the budget is checked once the data is loaded, and before the run folder is written
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_budget_is_checked_after_the_data_loads(monkeypatch, tmp_path):
    """The budget needs the stored images' size: it is checked on the loaded data, before anything
    is written."""
    from labeldistill import experiment
    from labeldistill.errors import ConfigError

    loaded = []
    real_prepare = experiment.prepare

    def prepare(*args, **kwargs):
        loaded.append(True)
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(experiment, "prepare", prepare)
    cfg = views_config("baseline", "over", **{"views.per_image": 20})
    with pytest.raises(ConfigError, match="at most 19 labels"):
        experiment.run_experiment(cfg, out=str(tmp_path), device="cpu", handle_signals=False)
    assert loaded and not (tmp_path / "over").exists()


# ---------------------------------------------------------------------------
# every label maker labels the views


def _run_views(method: str, **extra) -> dict:
    from labeldistill.experiment import run_experiment

    return run_experiment(views_config(method, method, **extra), device="cpu", handle_signals=False)


def _views_data(cfg):
    """The run's task data and its views, made here from the config alone."""
    from labeldistill.data import prepare
    from labeldistill.views import make_views

    data = prepare(cfg, "cpu", target_batches=False)
    return data, make_views(cfg, data.base_x)


def _not_one_label_per_image(labels: torch.Tensor) -> None:
    """The views of one image are labelled one by one, not all with the image's label."""
    rows = labels.view(N, K, -1)
    assert all(not torch.equal(rows[i, 0], rows[i, k]) for i in range(N) for k in range(1, K))


def test_true_labels_of_views():
    result = _run_views("baseline")
    cfg = views_config("baseline", "baseline")
    spec = ViewSpec.from_dict(result["views"])
    p = draw_params(spec, N, 28, 28, cfg.seed)
    classes = result["base_original_labels"]
    assert sorted(classes.tolist()) == list(range(10))  # one image per class: two images, two classes
    assert torch.equal(result["labels"], true_labels(p, classes, 10))
    mixed = (p.sources[:, 0] != p.sources[:, 1]) & (p.weight > 0) & (p.weight < 1)
    assert mixed.sum() >= N  # cutmix (the default) mixes most views
    assert ((result["labels"][mixed] != 0).sum(1) == 2).all()
    assert ((result["labels"][~mixed] != 0).sum(1) == 1).all()


def test_smoothed_true_labels_of_views():
    smoothing = 0.1
    result = _run_views("baseline-ls", **{"evaluate.label_smoothing": smoothing})
    cfg = views_config("baseline-ls", "baseline-ls")
    p = draw_params(ViewSpec.from_dict(result["views"]), N, 28, 28, cfg.seed)
    want = true_labels(p, result["base_original_labels"], 10) * (1 - smoothing) + smoothing / 10
    assert torch.equal(result["labels"], want)


def test_teacher_labels_of_views():
    from labeldistill.kd import soft_labels, teacher_logits

    result = _run_views("baseline-kd")
    cfg = views_config("baseline-kd", "baseline-kd")
    data, views = _views_data(cfg)
    _, _, teacher = teacher_logits(cfg, data, result["arch"])  # the same teacher, trained again from its seed
    with torch.no_grad():
        want = soft_labels(teacher(views.images), result["teacher"]["temperature"])
    assert result["labels"].shape == (N * K, 10)
    torch.testing.assert_close(result["labels"], want, rtol=0, atol=1e-6)
    _not_one_label_per_image(result["labels"])


def test_nearest_neighbour_labels_of_views():
    result = _run_views("knn")
    cfg = views_config("knn", "knn")
    data, views = _views_data(cfg)
    k = result["label_choice"]["k"]
    order = torch.cdist(views.images.flatten(1), data.target_x.flatten(1)).argsort(1)[:, :k]
    want = F.one_hot(data.target_y[order], 10).float().mean(1)
    assert torch.equal(result["labels"], want)
    _not_one_label_per_image(result["labels"])


def test_solved_labels_of_views_use_the_views_as_support_set():
    k = 10  # 100 views: one LeNet's 84 random features are too few, two give 168
    with pytest.raises(ConfigError, match="84 features, fewer than the 100"):
        _run_views("label-solve", **{"views.per_image": k, "solve.num_networks": 1, "solve.target_size": 120})
    result = _run_views("label-solve", **{"views.per_image": k, "solve.num_networks": 2, "solve.target_size": 120})
    assert result["labels"].shape == (N * k, 10)
    assert result["solve"]["features"] == 168 and result["solve"]["target_size"] == 120
    rows = result["labels"].view(N, k, -1)
    assert all(not torch.equal(rows[i, 0], rows[i, j]) for i in range(N) for j in range(1, k))


def test_meta_learned_labels_of_views():
    result = _run_views("ld-rr")
    assert result["labels"].shape == (N * K, 10)
    assert result["views"]["num_views"] == N * K
    assert 1 <= result["effective"]["inner_batch_size"] <= N * K
    # learned from uniform labels view by view: two outer steps of 25 of the 40 views leave a few
    # views untouched (still uniform), and give the others labels of their own
    assert torch.unique(result["labels"], dim=0).shape[0] >= 2 * N


@pytest.mark.parametrize("name", ["top3", "mse_top5"])
def test_export_writes_the_same_views_artifact_again(view_runs, tmp_path, name):
    from labeldistill.artifact import CARD_FILE, TENSOR_FILE, export_run, load_distilled

    original = load_distilled(view_runs[name][2])
    copy = _copy_run(view_runs, tmp_path, name)
    export_run(copy)  # from the stored copy
    again = load_distilled(copy)
    assert again.card == {**original.card, "tensor_file_sha256": again.card["tensor_file_sha256"]}
    assert torch.equal(again.labels, original.labels) and torch.equal(again.images, original.images)
    (copy / TENSOR_FILE).unlink()
    (copy / CARD_FILE).unlink()
    export_run(copy)  # from the data: base images selected and their views drawn again from the seed
    again = load_distilled(copy)
    assert torch.equal(again.labels, original.labels) and torch.equal(again.images, original.images)
    assert again.views.params.equals(original.views.params)
    assert again.card["views"] == original.card["views"] and again.card["storage"] == original.card["storage"]


def test_meta_learned_labels_are_validated_as_stored(monkeypatch):
    """The epoch LD keeps is chosen on validation models trained on its labels as stored (float16,
    top 2), as a direct method's candidates are."""
    from labeldistill.meta import loop

    seen = []
    real = loop.train_and_evaluate

    def record(recipe, images, labels, *args, **kwargs):
        seen.append(labels.clone())
        return real(recipe, images, labels, *args, **kwargs)

    monkeypatch.setattr(loop, "train_and_evaluate", record)
    result = _run_views("ld-rr", **{"storage.label_dtype": "float16", "storage.top_k": 2, "distill.epochs": 2,
                                     "distill.validate_every": 1})
    assert len(seen) == 2  # one validation per epoch
    for labels in seen:
        assert labels.shape == (N * K, 10) and ((labels != 0).sum(1) <= 2).all()
        assert torch.equal(labels, budget.compress(labels, "float16", 2))
    assert torch.equal(result["labels"], seen[result["best_epoch"] - 1])


def test_an_interrupted_views_run_resumes_exactly(tmp_path, monkeypatch):
    """SIGINT in LD's second epoch on views, then --resume: the labels and accuracies of an
    uninterrupted run (the views are drawn again from the seed, and must be the same)."""
    import os
    import signal

    from labeldistill.errors import Interrupted
    from labeldistill.experiment import run_experiment
    from labeldistill.meta.rr import RidgeRegression

    cfg = views_config("ld-rr", "resumed", **{"distill.epochs": 2, "distill.validate_every": 1,
                                              "distill.checkpoint_every": 1, "storage.label_dtype": "float16"})
    reference = run_experiment(cfg, device="cpu", handle_signals=False)
    original, count = RidgeRegression.step, {"n": 0}

    def step(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        count["n"] += 1
        if count["n"] == 3:  # 600 target images in batches of 300: step 1 of epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(RidgeRegression, "step", step)
    with pytest.raises(Interrupted, match="at epoch 2 step 1"):
        run_experiment(cfg, out=str(tmp_path), device="cpu")
    count["n"] = 100  # no second signal
    result = run_experiment(cfg, out=str(tmp_path), device="cpu", resume=True)
    assert count["n"] == 101  # from the checkpoint: the one step of epoch 2 left
    assert torch.equal(result["labels"], reference["labels"])
    assert result["test_accuracy"] == reference["test_accuracy"]
    assert result["views"] == reference["views"] and result["storage"] == reference["storage"]


def _index_out_of_range(t):
    t["label_indices"][0, 0] = 10


@pytest.mark.parametrize("alter,message", [
    (lambda p: _rewrite_tensors(p, _index_out_of_range), "the top-k labels in .* do not fit 10 classes"),
    (lambda p: _rewrite_tensors(p, lambda t: t.update(label_values=t["label_values"][:, :2].contiguous())),
     r"'label_values' in .* is float16 \[40, 2\] but the card says float16 \[40, 3\]"),
    (lambda p: _rewrite_tensors(p, lambda t: t.update(view_sources=t["view_sources"] + 1)),
     "40 view parameters for 40 labels of 10 base images"),
])
def test_damaged_top_k_labels_or_view_sources_are_one_line_errors(view_runs, tmp_path, alter, message):
    from labeldistill.artifact import load_distilled
    from labeldistill.errors import DataError

    path = _copy_run(view_runs, tmp_path, "top3")
    alter(path)
    with pytest.raises(DataError, match=message) as info:
        load_distilled(path)
    assert "\n" not in str(info.value)
