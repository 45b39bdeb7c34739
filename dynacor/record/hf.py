"""Recording with the Hugging Face `transformers.Trainer` (needs ``pip install transformers``).

Trainer callbacks never see the model's outputs, and the Trainer drops data set columns that the
model's ``forward`` does not take (the sample index among them), so recording needs a small
Trainer subclass: `DynacorTrainer` takes the index out of each batch, lets the Trainer compute
the loss as usual, and hands the logits to the `Recorder` (training batches only, before the
optimiser's step)::

    from dynacor.record.hf import DynacorTrainer, collate_with_copies

    data = WithCopies(train_set, labels, num_classes=10)
    recorder = Recorder.for_dataset(data, num_epochs=3)
    trainer = DynacorTrainer(model=model, args=TrainingArguments(..., num_train_epochs=3),
                             train_dataset=data, data_collator=collate_with_copies, recorder=recorder)
    trainer.train()
    recorder.detect(); recorder.save("runs/my-run")

The model's forward takes the input under ``pixel_values`` (or the keys of a data set whose
items are dicts) and ``labels``, and returns ``logits`` (a dict/ModelOutput, or a tuple
``(loss, logits, ...)``). One process only: under DDP each rank sees part of the data.

The classes are built on first use, so importing this module does not import transformers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from dynacor.errors import InputError

INDEX_KEY = "dynacor_index"


def collate_with_copies(batch: Sequence[tuple[Any, int, int]], input_key: str = "pixel_values") -> dict[str, Any]:
    """`WithCopies` items ``(x, y, index)`` as the Trainer's dict batch: ``{input_key: x,
    "labels": y, "dynacor_index": index}``; dict inputs keep their own keys (minus any label)."""
    from torch.utils.data import default_collate

    xs, ys, indices = zip(*batch, strict=True)
    if isinstance(xs[0], Mapping):
        out = default_collate([{k: v for k, v in x.items() if k not in ("label", "labels")} for x in xs])
    else:
        out = {input_key: default_collate(list(xs))}
    out["labels"] = torch.as_tensor(ys, dtype=torch.int64)
    out[INDEX_KEY] = torch.as_tensor(indices, dtype=torch.int64)
    return out


def _logits(outputs: Any, key: str) -> torch.Tensor:
    if isinstance(outputs, Mapping) and key in outputs:
        return outputs[key]
    if isinstance(outputs, (tuple, list)) and len(outputs) > 1:
        return outputs[1]  # (loss, logits, ...), the transformers convention
    got = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
    raise InputError("model output", key, "the logits: a dict/ModelOutput with that key or (loss, logits, ...)", got)


def _build() -> dict[str, type]:
    from transformers import Trainer, TrainerCallback

    class DynacorEpochs(TrainerCallback):
        """Closes the recorder's epoch at the end of each training epoch."""

        def __init__(self, recorder: Any):
            self.recorder = recorder

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            optimizer = kwargs.get("optimizer")
            metrics = {}
            if optimizer is not None:
                metrics["lr"] = float(optimizer.param_groups[0]["lr"])
            self.recorder.end_epoch(**metrics)

    class DynacorTrainer(Trainer):
        """A `transformers.Trainer` that feeds each training batch's logits to ``recorder``.

        Parameters
        ----------
        recorder : `dynacor.record.Recorder` of the training set (a `WithCopies`)
        logits_key : key of the logits in the model's output
        *args, **kwargs : as for `transformers.Trainer`; batches must carry ``dynacor_index``
            (use ``data_collator=collate_with_copies``)
        """

        def __init__(self, *args: Any, recorder: Any, logits_key: str = "logits", **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.recorder = recorder
            self.logits_key = logits_key
            self.add_callback(DynacorEpochs(recorder))

        def _set_signature_columns_if_needed(self) -> None:
            # Keep the index column of `datasets.Dataset` inputs, which the Trainer would drop.
            super()._set_signature_columns_if_needed()
            if INDEX_KEY not in self._signature_columns:
                self._signature_columns.append(INDEX_KEY)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            inputs = dict(inputs)
            index = inputs.pop(INDEX_KEY, None)
            labels = inputs.get("labels")
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
            if model.training:  # evaluation also calls compute_loss; only training batches are dynamics
                if index is None or labels is None:
                    raise InputError("training batch", INDEX_KEY if index is None else "labels",
                                     "in every batch (data_collator=collate_with_copies)", sorted(inputs))  # fmt: skip
                self.recorder.update(_logits(outputs, self.logits_key), labels, index)
            return (loss, outputs) if return_outputs else loss

    return {"DynacorTrainer": DynacorTrainer, "DynacorEpochs": DynacorEpochs}


_BUILT: dict[str, type] = {}


def __getattr__(name: str) -> type:
    if name in ("DynacorTrainer", "DynacorEpochs"):
        if not _BUILT:
            try:
                _BUILT.update(_build())
            except ImportError as exc:
                raise ImportError(f"{name} needs transformers: pip install transformers ({exc})") from None
        return _BUILT[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
