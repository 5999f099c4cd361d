import torch

from gandist.generate import lerp, slerp


def test_slerp_endpoints_norms_and_angles():
    torch.manual_seed(0)
    a, b = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)[:, None]
    path = slerp(a, b, t)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path.norm(dim=1), lerp(a.norm(), b.norm(), t).squeeze(1))
    # equal angular steps along the great circle
    u = path / path.norm(dim=1, keepdim=True)
    steps = torch.arccos((u[1:] * u[:-1]).sum(1).clamp(-1, 1))
    torch.testing.assert_close(steps, steps[:1].expand_as(steps))


def test_slerp_of_parallel_vectors_is_lerp():
    a = torch.tensor([1.0, 2.0, 3.0])
    t = torch.tensor([[0.0], [0.5], [1.0]])
    torch.testing.assert_close(slerp(a, 2 * a, t), lerp(a, 2 * a, t))


def test_lerp_midpoint():
    assert torch.equal(lerp(torch.zeros(3), torch.ones(3) * 2, torch.tensor([[0.5]])), torch.ones(1, 3))
