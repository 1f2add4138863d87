"""A small data-parallel training run: every rank trains on its own shard, gradients meet in an
all-reduce, and rank 0 writes the model and its metrics under outputs/.

Run it on two nodes, one process each:

    nbctl run examples/ddp --nodes 2 -- torchrun train.py

`nbctl run` gives every pod what torchrun reads (the number of nodes, this node's rank, rank 0's
address and port), so torchrun needs no flags. On one machine: `torchrun --nproc-per-node 2 train.py`.
"""

from __future__ import annotations

import json
import os
import time

import torch
import torch.distributed as dist
from torch import nn


def main() -> None:
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if backend == "nccl" else "cpu")

    # The ranks meet: the sum of 1..world, computed by an all-reduce, proves every rank took part.
    token = torch.tensor([float(rank + 1)], device=device)
    dist.all_reduce(token)
    expected = world * (world + 1) / 2
    print(f"rank {rank}/{world}: all_reduce gives {token.item():.0f} (expected {expected:.0f})", flush=True)
    assert token.item() == expected

    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(nn.Linear(8, 1).to(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1000 + rank)  # each rank its own shard
    true_w = torch.arange(8, dtype=torch.float32)
    started = time.monotonic()
    for step in range(1, 201):
        x = torch.randn(64, 8, generator=generator)
        y = x @ true_w + 0.01 * torch.randn(64, generator=generator)
        loss = nn.functional.mse_loss(model(x.to(device)).squeeze(1), y.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 and rank == 0:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)

    if rank == 0:
        outputs = os.environ.get("NBD_OUTPUTS", "outputs")
        os.makedirs(outputs, exist_ok=True)
        torch.save(model.module.state_dict(), os.path.join(outputs, "model.pt"))
        with open(os.path.join(outputs, "metrics.json"), "w") as f:
            json.dump({"loss": loss.item(), "world_size": world, "seconds": time.monotonic() - started}, f)
        print(f"wrote {outputs}/model.pt and {outputs}/metrics.json", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
