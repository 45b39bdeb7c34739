"""The dynamics encoder and its training with the clustering objective (METHOD.md, sections 3-5)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dynacor.errors import Cancelled
from dynacor.method.clustering import (
    alignment_loss,
    clustering_loss,
    orient_by_copies,
    soft_assign,
    target_distribution,
    validation_metric,
)
from dynacor.method.dynamics import unique_trajectories
from dynacor.method.nets import init_parameters


class DynamicsEncoder(nn.Module):
    """1-D CNN over the epoch axis: (B, 1, E) -> (B, rep_dim)."""

    def __init__(self, num_epochs: int, rep_dim: int = 512):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv1d(16, 32, 3, padding=1), nn.ReLU(),
            nn.Conv1d(32, 32, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.fc = nn.Linear(32 * num_epochs, rep_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x[:, None, :]
        return self.fc(self.conv(x).flatten(1))


@dataclass
class EncoderFit:
    """The chosen state of the encoder and the curves that chose it.

    Attributes
    ----------
    q_noisy : (S,) float32, noisy score of every sample at the chosen epoch
    representations : (S, rep_dim) float16 at the chosen epoch
    chosen_epoch : 0 is the state right after centroid initialisation
    epochs : one dict per state (0..K): cluster and alignment loss, validation metric, F1 if known
    unique_count : number of distinct input trajectories the encoder ran over
    warnings : what a user must know about the choice (no valid state, clusters oriented by copies)
    """

    q_noisy: np.ndarray
    representations: np.ndarray
    chosen_epoch: int
    epochs: list[dict] = field(default_factory=list)
    unique_count: int = 0
    warnings: list[str] = field(default_factory=list)


def fit_encoder(
    signals: np.ndarray,
    is_copy: np.ndarray,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    rep_dim: int,
    alpha: float,
    generator: torch.Generator,
    use_cluster_loss: bool = True,
    use_align_loss: bool = True,
    selection: str = "validation",
    in_reference: np.ndarray | None = None,
    eval_distance: str = "cosine",
    refine_steps: int = 0,
    restarts: int = 1,
    device: torch.device | str = "cpu",
    score_epoch: Callable[[np.ndarray], dict] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EncoderFit:
    """Train the encoder and centroids; keep the state with the best validation metric.

    Parameters
    ----------
    signals : (S, E) float, encoder input per sample (originals then copies)
    is_copy : (S,) bool
    selection : ``"validation"`` (largest V, paper), ``"last"`` epoch, or ``"init"`` (untrained)
    in_reference : (S,) bool, originals counted in V (see `validation_metric`)
    eval_distance : distance of the assignment used for scores and V (training always uses cosine)
    refine_steps : after the paper's centroid initialisation, move each centroid this many times
        to the mean representation of the samples currently assigned to it (see `refine_centroids`)
    restarts : draw this many encoder initialisations and keep the one with the largest V after
        refinement (model selection by the paper's own unsupervised metric)
    score_epoch : optional, given (S,) q_noisy returns extra numbers for the epoch's log (e.g. F1
        against ground truth, for reporting only: it never influences the choice)
    on_epoch : called with each epoch's dict
    should_stop : polled every batch; True raises `Cancelled`

    Returns
    -------
    EncoderFit
    """
    device = torch.device(device)
    unique, inverse, counts = unique_trajectories(np.asarray(signals, dtype=np.float32))
    x_unique = torch.as_tensor(unique, dtype=torch.float32, device=device)
    inverse_t = torch.as_tensor(inverse, device=device)
    copy_t = torch.as_tensor(np.asarray(is_copy, dtype=bool), device=device)
    s, e = signals.shape

    weights = torch.as_tensor(np.stack([np.bincount(inverse[~np.asarray(is_copy)], minlength=len(unique)),
                                        np.bincount(inverse[np.asarray(is_copy)], minlength=len(unique))]),
                              dtype=torch.float32, device=device)  # fmt: skip

    def embed_all(model: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model(x_unique[i : i + 8192]) for i in range(0, len(x_unique), 8192)])

    candidates = []
    for _ in range(max(1, restarts)):
        model = DynamicsEncoder(e, rep_dim)
        init_parameters(model, generator)  # on the CPU, where the generator is: same weights on any device
        model = model.to(device)
        z_u = embed_all(model)
        # Paper: mu_noisy = mean over copies, mu_clean = mean over originals (counts per trajectory).
        mu_n = (weights[1] @ z_u) / weights[1].sum()
        mu_c = (weights[0] @ z_u) / weights[0].sum()
        mu_n, mu_c = refine_centroids(z_u, weights.sum(0), mu_n, mu_c, refine_steps, eval_distance)
        q = soft_assign(z_u, mu_n, mu_c, eval_distance)[inverse_t].cpu().numpy()
        v = validation_metric(q, is_copy, in_reference)
        candidates.append((v if np.isfinite(v) else -np.inf, model, mu_n, mu_c))
    _, encoder, mu_n, mu_c = max(candidates, key=lambda c: c[0])
    mu_noisy = nn.Parameter(mu_n.clone())
    mu_clean = nn.Parameter(mu_c.clone())
    optimiser = torch.optim.Adam([*encoder.parameters(), mu_noisy, mu_clean], lr=lr, weight_decay=weight_decay)

    def evaluate(epoch: int, extra: dict) -> tuple[dict, np.ndarray, torch.Tensor]:
        z_u = embed_all(encoder)
        with torch.no_grad():
            q_u = soft_assign(z_u, mu_noisy, mu_clean, eval_distance)
        q = q_u[inverse_t].cpu().numpy()
        entry = {"epoch": epoch, **extra, "val_metric": validation_metric(q, is_copy, in_reference)}
        entry["flagged_fraction"] = float(np.mean(q[~np.asarray(is_copy)] > 0.5))
        if score_epoch is not None:
            entry.update(score_epoch(q))
        return entry, q, z_u

    started = time.perf_counter()
    entry, q, z_u = evaluate(0, {"cluster_loss": float("nan"), "align_loss": float("nan")})
    entry["seconds"] = time.perf_counter() - started
    log = [entry]
    best = (entry["val_metric"], 0, q, z_u)
    if on_epoch is not None:
        on_epoch(entry)

    for epoch in range(1, epochs + 1 if selection != "init" else 1):
        started = time.perf_counter()
        encoder.train()
        order = torch.randperm(s, generator=generator).to(device)
        sums = np.zeros(2)
        batches = 0
        for start in range(0, s, batch_size):
            if should_stop is not None and should_stop():
                raise Cancelled("cancelled during encoder training")
            idx = order[start : start + batch_size]
            # Run the CNN once per distinct trajectory in the batch; per-sample terms are gathered.
            rows, local = torch.unique(inverse_t[idx], return_inverse=True)
            # index_select, not z[local]: the backward of advanced indexing accumulates with
            # atomics across threads on CPU, so its sums (and the flags) varied from run to run.
            z = torch.index_select(encoder(x_unique[rows]), 0, local)
            q_b = soft_assign(z, mu_noisy, mu_clean)
            loss_c = clustering_loss(q_b, target_distribution(q_b))
            loss_a = alignment_loss(z, copy_t[idx], (q_b > 0.5).detach())
            loss = z.sum() * 0.0
            if use_cluster_loss:
                loss = loss + loss_c
            if use_align_loss:
                loss = loss + alpha * loss_a
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            sums += (float(loss_c.detach()), float(loss_a.detach()))
            batches += 1
        entry, q, z_u = evaluate(epoch, {"cluster_loss": sums[0] / batches, "align_loss": sums[1] / batches})
        entry["seconds"] = time.perf_counter() - started
        log.append(entry)
        if on_epoch is not None:
            on_epoch(entry)
        v = entry["val_metric"]
        if selection == "last" or (selection == "validation" and np.isfinite(v) and not (v <= best[0])):
            best = (v, epoch, q, z_u)

    v, chosen, q, z_u = best
    warnings = []
    if selection == "validation" and not np.isfinite(v):
        warnings.append(
            "every encoder state was invalid for the validation metric (most corrupted copies, or every "
            f"original, fell in one cluster); kept epoch {chosen}"
        )
    q, oriented = orient_by_copies(q, is_copy)
    if oriented is not None:
        warnings.append(oriented)
    return EncoderFit(
        q_noisy=q.astype(np.float32),
        # Gathered in float16: at a million rows the float32 (S, K) matrix alone is 2 GiB.
        representations=z_u.half()[inverse_t].cpu().numpy(),
        chosen_epoch=chosen,
        epochs=log,
        unique_count=int(len(counts)),
        warnings=warnings,
    )


def refine_centroids(
    z: torch.Tensor,
    counts: torch.Tensor,
    mu_noisy: torch.Tensor,
    mu_clean: torch.Tensor,
    steps: int,
    distance: str = "cosine",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each centroid to the (count-weighted) mean of the representations assigned to it.

    The paper initialises ``mu_clean`` as the mean over all originals, noisy ones included, which
    pulls it towards the noisy cluster and leaves the boundary on the noisy side: at 40% noise
    only about 30% are flagged. DEC's training moves centroids to their members by gradient steps,
    which at the paper's learning rate barely move in 10 epochs on 10k samples; these closed-form
    steps (spherical k-means, started from the paper's copy-informed initialisation) do it directly.

    Parameters
    ----------
    z : (U, K) representations of distinct trajectories
    counts : (U,) how many samples share each trajectory
    mu_noisy, mu_clean : (K,) starting centroids
    steps : number of updates; 0 returns the centroids unchanged

    Returns
    -------
    The refined ``(mu_noisy, mu_clean)``.
    """
    for _ in range(steps):
        noisy = (soft_assign(z, mu_noisy, mu_clean, distance) > 0.5).to(z.dtype) * counts
        clean = counts - noisy
        if noisy.sum() == 0 or clean.sum() == 0:
            break
        mu_noisy = (noisy @ z) / noisy.sum()
        mu_clean = (clean @ z) / clean.sum()
    return mu_noisy, mu_clean
