"""shapediff.models.scan_retrieval: retrieval through training scans, each in its own scan frame; the retrieved shape
comes back in the query scan's coordinates and unit, with no canonical frame."""

from __future__ import annotations

import pytest
import torch

from shapediff.models.scan_retrieval import ScanBank, build_scan_bank, query_frame, retrieve_in_scan_frame


def _shapes() -> list[torch.Tensor]:
    """Three different whole shapes (400, 3): a flat box, a tall box, a sphere."""
    gen = torch.Generator().manual_seed(0)
    flat = (torch.rand(400, 3, generator=gen) - 0.5) * torch.tensor([2.0, 0.3, 1.0])
    tall = (torch.rand(400, 3, generator=gen) - 0.5) * torch.tensor([0.4, 2.0, 0.4])
    ball = torch.randn(400, 3, generator=gen)
    return [flat, tall, ball / ball.norm(dim=1, keepdim=True)]


def _cuts(shape: torch.Tensor) -> list[torch.Tensor]:
    """Scans of a shape: the points on one side of a plane, for 4 plane directions."""
    return [shape[shape @ d < 0.2] for d in torch.eye(3)[[0, 1, 2, 0]] * torch.tensor([1.0, 1.0, 1.0, -1.0])[:, None]]


def test_a_bank_stores_each_scan_and_its_shape_in_that_scans_frame():
    shapes = _shapes()
    bank = build_scan_bank(shapes, [_cuts(s) for s in shapes], points=64)
    assert bank.scans.shape == (12, 64, 3) and bank.shapes.shape == (12, 400, 3)
    assert bank.owner.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # each stored scan has centroid 0 and RMS radius 1; its shape went through the same map
    assert torch.allclose(bank.scans.mean(1), torch.zeros(12, 3), atol=1e-5)
    assert torch.allclose(bank.scans.square().sum(-1).mean(-1), torch.ones(12), atol=1e-4)
    frame, _ = query_frame(_cuts(shapes[1])[2], 64)
    assert torch.allclose(frame.from_frame(bank.shapes[6].double()).float(), shapes[1], atol=1e-5)


def test_a_scan_in_millimetres_anywhere_gets_its_shape_back_in_millimetres_there():
    shapes = _shapes()
    bank = build_scan_bank(shapes, [_cuts(s) for s in shapes], points=64)
    center = torch.tensor([3000.0, -250.0, 40.0])
    for owner in range(3):
        scan = _cuts(shapes[owner])[1].double() * 1000.0 + center
        shape, index = retrieve_in_scan_frame(scan, bank)
        assert int(bank.owner[index]) == owner
        assert torch.allclose(shape.double(), shapes[owner].double() * 1000.0 + center, atol=1e-2)


def test_icp_moves_a_retrieved_shape_onto_a_scan_of_a_scaled_shifted_copy():
    ball = _shapes()[2]
    bank = build_scan_bank([ball], [_cuts(ball)], points=128)
    truth = ball.double() * 1.1 + torch.tensor([0.05, 0.0, -0.03], dtype=torch.float64)
    scan = truth[ball[:, 0] < 0.0]  # less of it than any bank scan shows: its frame alone misplaces the shape
    plain, _ = retrieve_in_scan_frame(scan, bank)
    moved, _ = retrieve_in_scan_frame(scan, bank, icp_steps=3)
    assert float((plain.double() - truth).norm(dim=1).mean()) > 0.05
    assert torch.allclose(moved.double(), truth, atol=1e-5)


@pytest.mark.parametrize("call, match", [
    (lambda b: retrieve_in_scan_frame(torch.rand(20, 3), torch.rand(3, 10, 3)), "bank: expected a ScanBank"),
    (lambda b: retrieve_in_scan_frame(torch.rand(20, 3), b, icp_steps=-1), "icp_steps"),
    (lambda b: retrieve_in_scan_frame(torch.rand(20, 2), b), r"scan: expected a \(N, 3\) tensor, got shape \(20, 2\)"),
    (lambda b: retrieve_in_scan_frame(torch.rand(1, 3), b), "scan: expected at least 2 points"),
    (lambda b: retrieve_in_scan_frame(torch.full((20, 3), float("nan")), b), "scan: .*(NaN|finite)"),
    (lambda b: build_scan_bank([torch.rand(10, 3)], []), "one list of scans per shape"),
    (lambda b: build_scan_bank([torch.rand(10, 3), torch.rand(11, 3)], [[], []]), "one size K"),
    (lambda b: build_scan_bank([torch.rand(10, 3)], [[]]), "at least one scan"),
])
def test_a_bank_or_query_it_cannot_use_is_one_clear_error(call, match):
    shapes = _shapes()
    bank = build_scan_bank(shapes, [_cuts(s) for s in shapes], points=32)
    assert isinstance(bank, ScanBank)
    with pytest.raises(ValueError, match=match):
        call(bank)
