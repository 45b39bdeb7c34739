"""`DynacorCallback`: recording with PyTorch Lightning (the ``lightning`` extra: ``pip install
dynacor[lightning]``).

The LightningModule trains on a `dynacor.record.WithCopies` data set, whose batches are
``(x, y, index)``, and returns its logits from ``training_step``::

    def training_step(self, batch, batch_idx):
        x, y, index = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        return {"loss": loss, "logits": logits.detach()}

    data = WithCopies(train_set, train_set.targets, num_classes=10)
    recorder = Recorder.for_dataset(data, num_epochs=trainer_epochs)
    trainer = L.Trainer(max_epochs=trainer_epochs, callbacks=[DynacorCallback(recorder)])
    trainer.fit(module, DataLoader(data, batch_size=128, shuffle=True))
    recorder.detect(); recorder.save("runs/my-run")

The logits were computed before the optimiser's step, which is what the recorder wants, even
though the callback runs after it. Targets and indices come from the batch (positions 1 and 2,
or keys ``"y"``/``"index"`` of a dict batch) unless ``training_step`` returns them as
``"targets"`` and ``"indices"``. One process only: under DDP each rank sees part of the data.
"""

from __future__ import annotations

from typing import Any

from dynacor.errors import InputError
from dynacor.record.recorder import Recorder

try:
    from lightning.pytorch import Callback
except ImportError:  # the extra is optional; the class still imports so the package does
    Callback = object  # type: ignore[assignment,misc]
    AVAILABLE = False
else:
    AVAILABLE = True


class DynacorCallback(Callback):  # type: ignore[misc,valid-type]
    """Feeds each training batch's logits to a `Recorder` and closes its epochs.

    Parameters
    ----------
    recorder : the recorder (`Recorder.for_dataset` of the training data set)
    logits_key : key of the logits in ``training_step``'s returned dict
    """

    def __init__(self, recorder: Recorder, logits_key: str = "logits"):
        if not AVAILABLE:
            raise ImportError("DynacorCallback needs lightning: pip install 'dynacor[lightning]'")
        super().__init__()
        self.recorder = recorder
        self.logits_key = logits_key

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not isinstance(outputs, dict) or self.logits_key not in outputs:
            got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
            raise InputError("training_step", self.logits_key, "returned in a dict: return {'loss': loss, "
                             f"'{self.logits_key}': logits.detach()}}", got)  # fmt: skip
        targets = outputs.get("targets")
        indices = outputs.get("indices")
        if targets is None or indices is None:
            batch_targets, batch_indices = _from_batch(batch)
            targets = batch_targets if targets is None else targets
            indices = batch_indices if indices is None else indices
        self.recorder.update(outputs[self.logits_key], targets, indices)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        metrics = {}
        lr = _learning_rate(trainer)
        if lr is not None:
            metrics["lr"] = lr
        self.recorder.end_epoch(**metrics)


def _from_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, dict) and "y" in batch and "index" in batch:
        return batch["y"], batch["index"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 3:
        return batch[1], batch[2]
    raise InputError("training batch", "index", "(x, y, index) batches from WithCopies, or 'targets' and "
                     "'indices' returned by training_step", type(batch).__name__)  # fmt: skip


def _learning_rate(trainer: Any) -> float | None:
    try:
        return float(trainer.optimizers[0].param_groups[0]["lr"])
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
