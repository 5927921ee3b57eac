"""Other formulations of the stacked LeNet's convolutions (20 models, inner batch 50), each
timed against what the parallel evaluation does, one layer at a time. The README's
performance section quotes this script's output.

python scripts/conv_alternatives.py [threads]   (about a minute; run on an idle machine)
"""
import statistics
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
CL = torch.channels_last
M, N = 20, 50  # models, inner batch
conv_bwd = torch.ops.aten.convolution_backward


def ms(fn, reps=30):
    fn()
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def grad_like(y):
    """A fixed random output gradient in y's layout (an all-ones one is several times slower here)."""
    return torch.randn(y.shape).contiguous(memory_format=CL if y.dim() == 4 else torch.contiguous_format)


def fwd_bwd(x, w, b, groups, pad):
    gy = grad_like(F.conv2d(x.detach(), w.detach(), None, padding=pad, groups=groups))

    def run():
        F.conv2d(x, w, b, padding=pad, groups=groups).backward(gy)
    return run


def row(name, ours, other):
    print(f"| {name} | {ours:.2f} ms | {other:.2f} ms | {other / ours:.2f}x |")


print(f"{torch.get_num_threads()} threads; | formulation | as the parallel path does it | alternative | ratio |")
g = torch.Generator().manual_seed(0)
w1 = torch.randn(M * 6, 1, 5, 5, generator=g, requires_grad=True)
b1 = torch.randn(M * 6, generator=g, requires_grad=True)
w2 = torch.randn(M * 16, 6, 5, 5, generator=g, requires_grad=True)
b2 = torch.randn(M * 16, generator=g, requires_grad=True)
x1 = torch.randn(N, M, 28, 28, generator=g).contiguous(memory_format=CL)  # each model its own batch
x2 = torch.randn(N, M * 6, 14, 14, generator=g).contiguous(memory_format=CL).requires_grad_()
conv1 = ms(fwd_bwd(x1, w1, b1, M, 2))
conv2 = ms(fwd_bwd(x2, w2, b2, M, 0))

# 1. the 20 models' inputs as one ungrouped batch of 1,000 (the arithmetic of one model x 1,000 images)
u1 = torch.randn(N * M, 1, 28, 28, generator=g).contiguous(memory_format=CL)
u2 = torch.randn(N * M, 6, 14, 14, generator=g).contiguous(memory_format=CL).requires_grad_()
row("conv1 fwd+bwd: ungrouped batch of 1,000", conv1,
    ms(fwd_bwd(u1, w1[:6].detach().requires_grad_(), b1[:6].detach().requires_grad_(), 1, 2)))
row("conv2 fwd+bwd: ungrouped batch of 1,000", conv2,
    ms(fwd_bwd(u2, w2[:16].detach().requires_grad_(), b2[:16].detach().requires_grad_(), 1, 0)))

# 2. conv1 as 20 separate convolutions
xs = [x1[:, i:i + 1].contiguous() for i in range(M)]
gs = [grad_like(F.conv2d(xs[i], w1[:6].detach(), padding=2)).contiguous() for i in range(M)]


def separate():
    ys = [F.conv2d(xs[i], w1[6 * i:6 * i + 6], b1[6 * i:6 * i + 6], padding=2) for i in range(M)]
    torch.autograd.backward(ys, gs)


row("conv1 fwd+bwd: 20 separate convolutions", conv1, ms(separate))

# 3. conv1 with 8 channels per model (2 of them zero) instead of 6
w8 = torch.zeros(M, 8, 1, 5, 5)
w8[:, :6] = w1.detach().view(M, 6, 1, 5, 5)
w8 = w8.flatten(0, 1).requires_grad_()
row("conv1 fwd+bwd: 8 channels per model", conv1, ms(fwd_bwd(x1, w8, None, M, 2)))

# 4. conv2's input gradient as a forward convolution with flipped, transposed weights
y2 = F.conv2d(x2.detach(), w2.detach(), None, groups=M)
gy = torch.randn(y2.shape, generator=g).contiguous(memory_format=CL)
w2t = w2.detach().view(M, 16, 6, 5, 5).transpose(1, 2).flip(-1, -2).reshape(M * 6, 16, 5, 5).contiguous()
ref = conv_bwd(gy, x2.detach(), w2.detach(), [M * 16], [1, 1], [0, 0], [1, 1], False, [0, 0], M,
               [True, False, False])[0]
assert torch.allclose(F.conv2d(gy, w2t, None, padding=4, groups=M), ref, atol=1e-3)
row("conv2 input gradient: forward conv, flipped weights",
    ms(lambda: conv_bwd(gy, x2.detach(), w2.detach(), [M * 16], [1, 1], [0, 0], [1, 1], False, [0, 0], M,
                        [True, False, False])),
    ms(lambda: F.conv2d(gy, w2t, None, padding=4, groups=M)))

# 5. conv2 as im2col (unfold) + batched matrix product, forward and backward
g_cols = grad_like(torch.empty(M, N * 100, 16))


def im2col():
    cols = F.unfold(x2, 5)  # (N, M*6*25, 100)
    cols = cols.view(N, M, 150, 100).permute(1, 0, 3, 2).reshape(M, N * 100, 150)
    torch.bmm(cols, w2.view(M, 16, 150).transpose(1, 2)).backward(g_cols)


row("conv2 fwd+bwd: unfold + bmm", conv2, ms(im2col))

# 6. a tie-exact 2x2 max-pool written with four strided views, against torch's max_pool2d
class Pool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        a, b, c, d = x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]
        top, bottom = torch.maximum(a, b), torch.maximum(c, d)
        ctx.save_for_backward(b > a, d > c, bottom > top)
        ctx.shape = x.shape
        return torch.maximum(top, bottom)

    @staticmethod
    def backward(ctx, gout):
        pick_b, pick_d, pick_bottom = ctx.saved_tensors
        zero = gout.new_zeros(())
        g_bottom = torch.where(pick_bottom, gout, zero)
        g_top = gout - g_bottom
        gx = torch.empty(ctx.shape).contiguous(memory_format=CL)
        gx[..., 0::2, 0::2] = torch.where(pick_b, zero, g_top)
        gx[..., 0::2, 1::2] = torch.where(pick_b, g_top, zero)
        gx[..., 1::2, 0::2] = torch.where(pick_d, zero, g_bottom)
        gx[..., 1::2, 1::2] = torch.where(pick_d, g_bottom, zero)
        return gx


h = torch.randn(N, M * 6, 28, 28, generator=g).contiguous(memory_format=CL).requires_grad_()
g_pool = grad_like(F.max_pool2d(h.detach(), 2))
row("2x2 max-pool fwd+bwd: four strided views", ms(lambda: F.max_pool2d(h, 2).backward(g_pool)),
    ms(lambda: Pool.apply(h).backward(g_pool)))
