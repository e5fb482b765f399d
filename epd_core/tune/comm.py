"""The process group of a headless run: rank, world size, seeds and the gradient all-reduce."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

# Rank r's seed offset: a prime far above any iteration count, so ranks' streams never share a seed.
RANK_SEED_STRIDE = 1_000_003


def rank_seed(seed: int, rank: int, resumed: int = 0, world: int = 1) -> int:
    """Rank ``rank``'s training seed; rank 0 of a fresh run keeps ``seed`` (one process = the plain loop)."""
    return seed + RANK_SEED_STRIDE * (rank + world * resumed)


@dataclass
class Ranks:
    """This process's place in the run; ``hook`` is the loops' grad_hook (None with one process)."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"  # where the collective runs (NCCL needs CUDA tensors)
    reduced_bytes: int = 0  # bytes all-reduced so far (payload, not wire traffic)
    reductions: int = 0
    digests: list[str] = field(default_factory=list)  # per step: hash of the parameters and averaged gradients
    keep_digests: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_mean(self, params: list[torch.Tensor]) -> None:
        """Average every present gradient over the ranks, in place, with one flat all-reduce."""
        grads = [p.grad for p in params if p.grad is not None]
        if grads and self.world > 1:
            flat = torch.cat([g.reshape(-1) for g in grads]).to(self.device)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat = (flat / self.world).to(grads[0].device)
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
            self.reduced_bytes += flat.numel() * flat.element_size()
            self.reductions += 1
        if self.keep_digests:
            self.digests.append(digest(params))

    @property
    def hook(self):
        return self.all_reduce_mean if (self.world > 1 or self.keep_digests) else None


def digest(params: list[torch.Tensor]) -> str:
    """sha256 of the parameters' and gradients' bytes (replicas must agree bit for bit)."""
    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
        if p.grad is not None:
            h.update(p.grad.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def init_ranks(backend: str = "auto", timeout_s: float = 300.0, keep_digests: bool = False) -> Ranks:
    """Join torchrun's group when RANK and WORLD_SIZE are set; a single-process Ranks otherwise."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Ranks(keep_digests=keep_digests)
    if backend not in ("auto", "gloo", "nccl"):
        raise ValueError(f"backend={backend!r}: choose 'auto', 'gloo' or 'nccl'")
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    device = "cpu"
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return Ranks(dist.get_rank(), dist.get_world_size(), device, keep_digests=keep_digests)


def close(ranks: Ranks) -> None:
    """Leave the group (after a barrier, so rank 0's last write is done before anyone exits)."""
    if ranks.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
