"""Record DynaCor's training dynamics in your own training loop, then detect noisy labels.

``WithCopies`` appends the corrupted copies to any map-style data set; ``Recorder`` collects each
sample's logit margin per epoch during training (on the logits' device, no per-batch sync) and
runs the encoder and clustering (``Recorder.detect``) or writes a run the app opens
(``Recorder.save``); ``save_dynamics``/``load_dynamics`` keep the recording in one .npz file for
``dynacor detect --dynamics``. Needs torch only; the Lightning callback is in
``dynacor.record.lightning`` (the ``lightning`` extra), the Hugging Face Trainer in
``dynacor.record.hf`` (the ``hf`` extra).
"""

from dynacor.record.copies import WithCopies, draw_copies
from dynacor.record.files import load_dynamics, save_dynamics
from dynacor.record.recorder import Recorder, batch_signals

__all__ = ["Recorder", "WithCopies", "batch_signals", "draw_copies", "load_dynamics", "save_dynamics"]
