"""The parallel (stacked / vmap) evaluation equals the plain sequential loop under the same seeds."""
import pytest
import torch

from labeldistill.evaluate import Recipe, train_and_evaluate, train_and_evaluate_sequential
from labeldistill.models import LeNet
from labeldistill.stacked import lenet_forward, alexcifarnet_forward, _pool2

# Small colour images keep the float64 runs fast; the stacked forward handles any size.
SHAPES = {"lenet": (1, 28), "alexcifarnet": (3, 12), "resnet": (3, 8)}


def _task(arch, n=20, n_eval=60, per_model=None, seed=0, size=None):
    g = torch.Generator().manual_seed(seed)
    c, s = SHAPES[arch]
    s = size or s
    base = torch.randn(n, c, s, s, generator=g, dtype=torch.float64)
    shape = (n, 10) if per_model is None else (per_model, n, 10)
    labels = torch.softmax(3 * torch.randn(*shape, generator=g, dtype=torch.float64), -1)
    ex = torch.randn(n_eval, c, s, s, generator=g, dtype=torch.float64)
    ey = torch.randint(0, 10, (n_eval,), generator=g)
    return base, labels, ex, ey


@pytest.mark.parametrize("arch,head,per_model", [
    ("lenet", "linear", False), ("lenet", "linear", True), ("lenet", "rr", False), ("lenet", "rr", True),
    ("alexcifarnet", "linear", False), ("alexcifarnet", "rr", True)])
def test_parallel_equals_sequential(arch, head, per_model):
    seeds = [3, 1, 4]
    base, labels, ex, ey = _task(arch, per_model=len(seeds) if per_model else None)
    recipe = Recipe(arch=arch, head=head, batch_size=8)
    ref = train_and_evaluate_sequential(recipe, base, labels, seeds, 6, ex, ey, eval_steps=[2, 6, 4])
    # max_models=2 < 3 seeds: two chunks; max_images=50 -> evaluation in chunks of 25 and 50 images.
    got = train_and_evaluate(recipe, base, labels, seeds, 6, ex, ey, eval_steps=[2, 6, 4],
                             max_models=2, max_images=50)
    assert got.steps == ref.steps == [2, 4, 6]
    assert got.errors.shape == (3, 3)
    torch.testing.assert_close(got.losses, ref.losses, rtol=0, atol=1e-10)
    torch.testing.assert_close(got.errors, ref.errors, rtol=0, atol=1e-9)
    # the models really trained and differ from each other
    assert not torch.allclose(ref.losses[0], ref.losses[-1])
    assert len(set(ref.losses[-1].tolist())) == 3


@pytest.mark.parametrize("head", ["linear", "rr"])
def test_vmap_fallback_equals_sequential(head):
    """ResNet has no stacked forward (BatchNorm): the vmap path must still agree, in chunks too."""
    seeds = [5, 6]
    base, labels, ex, ey = _task("resnet", n_eval=30)
    recipe = Recipe(arch="resnet", head=head, batch_size=8)
    ref = train_and_evaluate_sequential(recipe, base, labels, seeds, 3, ex, ey, eval_steps=[1, 3])
    got = train_and_evaluate(recipe, base, labels, seeds, 3, ex, ey, eval_steps=[1, 3], max_models=1,
                             max_images=16)
    torch.testing.assert_close(got.losses, ref.losses, rtol=0, atol=1e-10)
    torch.testing.assert_close(got.errors, ref.errors, rtol=0, atol=1e-9)


@pytest.mark.parametrize("head", ["linear", "rr"])
def test_resnet_test_result_independent_of_how_models_are_evaluated(head):
    """A tested ResNet's accuracy is the same alone, stacked with others and in any chunks.

    Linear head (the reference's or2 script): BatchNorm with the statistics of
    consecutive 1,024-image test batches, whatever `max_images`; 1,100 test
    images make two such batches. RR head (its rr script): running estimates in
    eval mode, so any chunking gives the same result.
    """
    seeds = [7, 8, 9]
    base, labels, ex, ey = _task("resnet", n_eval=1100, size=4)  # 4x4 images: fast in float64
    recipe = Recipe(arch="resnet", head=head, batch_size=8)
    alone = [train_and_evaluate(recipe, base, labels, [s], 2, ex, ey) for s in seeds]
    alone_err = torch.cat([r.errors for r in alone], 1)
    alone_loss = torch.cat([r.losses for r in alone], 1)
    for kw in ({}, {"max_models": 2, "max_images": 100}, {"max_models": 3, "max_images": 3000}):
        got = train_and_evaluate(recipe, base, labels, seeds, 2, ex, ey, **kw)
        torch.testing.assert_close(got.errors, alone_err, rtol=0, atol=0)
        torch.testing.assert_close(got.losses, alone_loss, rtol=0, atol=1e-10)
    ref = train_and_evaluate_sequential(recipe, base, labels, seeds, 2, ex, ey)
    torch.testing.assert_close(ref.losses, alone_loss, rtol=0, atol=1e-10)
    assert len(set(alone_loss[0].tolist())) == 3
    # The check has teeth: test batches of another size change a batch-statistics model's result
    # and leave a running-estimates model's alone.
    other = train_and_evaluate_sequential(recipe, base, labels, seeds, 2, ex, ey, eval_batch=550)
    if head == "linear":
        assert (other.losses - alone_loss).abs().min() > 1e-6
    else:
        torch.testing.assert_close(other.losses, alone_loss, rtol=0, atol=1e-10)


def test_float32_parallel_close_to_sequential():
    """In the default float32 the two paths differ only by reduction order."""
    seeds = [0, 1]
    base, labels, ex, ey = (t.float() if t.is_floating_point() else t for t in _task("lenet"))
    recipe = Recipe(arch="lenet", batch_size=8)
    ref = train_and_evaluate_sequential(recipe, base, labels, seeds, 5, ex, ey)
    got = train_and_evaluate(recipe, base, labels, seeds, 5, ex, ey)
    torch.testing.assert_close(got.losses, ref.losses, rtol=0, atol=1e-4)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("grad", [True, False])
def test_stacked_forward_matches_modules(shared, grad):
    torch.manual_seed(0)
    from labeldistill.models import AlexCifarNet
    from torch.func import stack_module_state

    for cls, fwd, (c, s) in ((LeNet, lenet_forward, (1, 28)), (AlexCifarNet, alexcifarnet_forward, (3, 12))):
        models = [cls(c, 10, s).double() for _ in range(3)]
        params, _ = stack_module_state(models)
        x = torch.randn(4, c, s, s, dtype=torch.float64) if shared else torch.randn(3, 4, c, s, s,
                                                                                    dtype=torch.float64)
        with torch.set_grad_enabled(grad):
            got = fwd(params, x, shared, True)
            feats = fwd(params, x, shared, False)
            ref = torch.stack([m(x if shared else x[i]) for i, m in enumerate(models)])
            ref_f = torch.stack([m(x if shared else x[i], head=False) for i, m in enumerate(models)])
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(feats, ref_f, rtol=0, atol=1e-12)


def test_graph_free_pool_equals_max_pool():
    x = torch.randn(2, 6, 11, 10)  # odd height: the last row is dropped, as max_pool2d does
    with torch.no_grad():
        torch.testing.assert_close(_pool2(x), torch.nn.functional.max_pool2d(x, 2), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["adam", "sgd", "momentum"])
def test_make_optimizer_fused_equals_plain_loop(name):
    """The fused update the evaluation uses gives the parameters torch's per-parameter loop gives."""
    from labeldistill.evaluate import make_optimizer

    g = torch.Generator().manual_seed(0)
    start = [torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]
    grads = [[torch.randn(p.shape, generator=g, dtype=torch.float64) for p in start] for _ in range(4)]
    fused = [p.clone().requires_grad_() for p in start]
    plain = [p.clone().requires_grad_() for p in start]
    opt = make_optimizer(name, fused, 0.05)
    assert opt.defaults.get("fused") is True
    kw = {"momentum": 0.9} if name == "momentum" else {}
    ref = (torch.optim.Adam if name == "adam" else torch.optim.SGD)(plain, lr=0.05, foreach=False, **kw)
    for step_grads in grads:
        for p, q, gr in zip(fused, plain, step_grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        opt.step()
        ref.step()
    for p, q, p0 in zip(fused, plain, start):
        assert not torch.equal(q.detach(), p0)
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-14)


def test_shared_one_channel_input_runs_channels_last():
    """A one-channel test batch is ambiguous between NCHW and NHWC; the stacked forward must keep
    channels_last (where its pooling and grouped convolutions are fast) from conv1 onwards."""
    from labeldistill.stacked import _stack_input

    x = torch.randn(5, 1, 28, 28)
    h, _ = _stack_input(x, True)
    assert torch.equal(h, x)
    out = torch.nn.functional.conv2d(h, torch.randn(12, 1, 5, 5), padding=2)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert not out.is_contiguous()


def test_baseline_step_grid_is_the_references():
    from labeldistill.evaluate import step_grid

    # Up to 100 base examples: after steps 10, 25, 75 and every 50 steps up to 1000 (50 and 100 too:
    # the reference validates after ITER % 50 == 49, i.e. 50, 100, ...).
    assert step_grid(100) == step_grid(10) == [10, 25, 50, 75, 100, 150, 200, 250, 300, 350, 400, 450, 500,
                                                550, 600, 650, 700, 750, 800, 850, 900, 950, 1000]
    assert step_grid(101) == step_grid(500) == [10, 25, 75, 101, 201, 301, 501, 701, 1001, 1201, 1501, 1701]


def test_step_search_keeps_the_earliest_lowest_error():
    from labeldistill.methods import earliest_lowest

    assert earliest_lowest([5.0, 3.0, 4.0, 3.0, 3.5]) == 1  # a tie does not replace
    assert earliest_lowest([5.0, 3.0, 2.9]) == 2  # strictly lower does
    assert earliest_lowest([90.0, 90.0, 90.0]) == 0
