"""Reference clouds for the generation metrics, drawn reproducibly from a held-out split."""

from __future__ import annotations

import torch

from shapediff.randomness import mix_seed


def reference_clouds(dataset, count: int, seed: int) -> torch.Tensor:
    """(R, N, 3) reference clouds: the first ``count`` items of ``dataset``, drawn reproducibly.

    Items' ``ref_points`` (ShapeNetPC15k's last 5,000 points of each cloud, as PointFlow) are used
    when present, else ``points``. ``R = min(count, len(dataset))``; each item is drawn under the
    global seed ``mix_seed(seed, i)`` so datasets that sample points at random give the same clouds.
    """
    if len(dataset) == 0:
        raise ValueError("evaluation: the reference split is empty")
    clouds = []
    for i in range(min(count, len(dataset))):
        torch.manual_seed(mix_seed(seed, i))
        item = dataset[i]
        # PointFlow's protocol scores against the held-out reference points when the data has them.
        clouds.append(torch.as_tensor(item.get("ref_points", item["points"])).float())
    return torch.stack(clouds)
