"""A trained network applied to cached volumes: the one batched inference loop.

Training (its test patients), ``python -m tcl predict`` (new patients, averaged over models)
and the representation analysis (every 2-D output) all run a network in eval mode over rows
of a [N, 3, H, W, D] float16 array the same way: :func:`outputs_in_batches`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from tcl.tasks import PAPER_TASK, TASKS
from tcl.training.runtime import autocast
from tcl.utils import TclError


@torch.no_grad()
def outputs_in_batches(
    model: nn.Module, volumes: np.ndarray, rows: np.ndarray, batch_size: int, device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    """The model's outputs for ``rows`` of ``volumes``, ``batch_size`` patients at a time.

    The model must be in eval mode; outputs then do not depend on the batch (BatchNorm uses its
    running statistics), which the padding below relies on.

    Args:
        volumes: [N_all, 3, H, W, D] array (e.g. a memory-mapped float16 cache).
        rows: [n] the patients wanted, in order.
    Yields:
        per batch of b ≤ ``batch_size`` patients, the model's output dict with every tensor cut
        to its first b rows (bf16 under autocast on CUDA, float32 on CPU).
    """
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        # Moved in the cache's dtype (float16: half the bytes) and converted on the device;
        # float16 → float32 is exact, so the values are those of a conversion on the host.
        x = torch.from_numpy(np.asarray(volumes[chunk])).to(device).float()
        n = len(x)
        if device.type == "cuda":
            if n < batch_size and len(rows) > batch_size:
                # the last, partial batch padded to the full one: cudnn.benchmark would
                # otherwise autotune every layer again for one batch (eval mode: each
                # sample's output is its own, the padding's is dropped)
                x = torch.cat((x, x.new_zeros(batch_size - n, *x.shape[1:])))
        # the layout training runs in (tcl.training.train.build_model): the same kernels, so the
        # same sums, as the training's own test predictions
        x = x.contiguous(memory_format=torch.channels_last_3d)
        with autocast(device):
            outputs = model(x)
        yield {key: value[:n] for key, value in outputs.items()}


@torch.no_grad()
def class_probabilities(
    model: nn.Module,
    volumes: np.ndarray,
    rows: np.ndarray,
    batch_size: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities of class 1 for both tasks, eval mode.

    Runs out of GPU memory gracefully: the batch is halved and the prediction restarted, down
    to single patients, because the model in memory is a finished training that has no
    checkpoint to resume from.

    Args:
        volumes: [N_all, 3, H, W, D] cache array (memory-mapped); ``rows`` selects patients.
    Returns:
        p_invasion [len(rows)], p_high_grade [len(rows)] as float64 arrays.
    """
    model.eval()
    while True:
        try:
            p: dict[str, list[torch.Tensor]] = {task: [] for task in TASKS}
            for outputs in outputs_in_batches(model, volumes, rows, batch_size, device):
                for task in TASKS:
                    logits = outputs[PAPER_TASK[task]].float()
                    p[task].append(torch.softmax(logits, dim=1)[:, 1].cpu())
            p_invasion, p_high_grade = (torch.cat(p[task]).double().numpy() for task in TASKS)
            return p_invasion, p_high_grade
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise TclError(
                    "CUDA ran out of memory predicting a single test patient; use a GPU with "
                    "more memory or a smaller profile"
                ) from None
            batch_size //= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()
