import torch

from labeldistill.heads import append_ones, ridge_weights, rr_logits


def _primal(phi, y, lam):
    d = phi.shape[-1]
    return torch.linalg.solve(phi.T @ phi + lam * torch.eye(d, dtype=phi.dtype), phi.T @ y)


def test_dual_ridge_equals_primal():
    g = torch.Generator().manual_seed(1)
    for n, d in [(10, 85), (50, 85), (30, 7)]:
        phi = append_ones(torch.randn(n, d - 1, generator=g, dtype=torch.float64))
        y = torch.softmax(torch.randn(n, 10, generator=g, dtype=torch.float64), 1)
        for lam in (1.0, 0.1):
            torch.testing.assert_close(ridge_weights(phi, y, lam), _primal(phi, y, lam), rtol=1e-9, atol=1e-10)


def test_ridge_is_batched():
    phi = torch.randn(3, 12, 9, dtype=torch.float64)
    y = torch.randn(3, 12, 4, dtype=torch.float64)
    batched = ridge_weights(phi, y, 1.0)
    for i in range(3):
        torch.testing.assert_close(batched[i], ridge_weights(phi[i], y[i], 1.0))


def test_ridge_gradient_matches_finite_differences():
    phi = torch.randn(8, 6, dtype=torch.float64)
    y = torch.rand(8, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ridge_weights(phi, t, 1.0), (y,))


def test_append_ones_and_scaled_logits():
    f = torch.randn(4, 5)
    phi = append_ones(f)
    assert phi.shape == (4, 6) and torch.all(phi[:, -1] == 1)
    w = torch.randn(6, 3)
    torch.testing.assert_close(rr_logits(phi, w, torch.tensor(2.0)), 2.0 * phi @ w)
