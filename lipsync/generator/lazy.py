"""The generator of one checkpoint, loaded only as far as a backend needs it (LazyModel).

OpenVINO needs the weights as numpy arrays (read without torch), or nothing at all when
its model is cached; PyTorch needs the module. A CPU job on a cached OpenVINO model thus
never reads the checkpoint, nor imports torch (about 1.3 s of a job's start).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ..errors import LipSyncError
from ..runtime.devices import cpu_threads, torch_missing
from .checkpoint import Weights, read_weights

if TYPE_CHECKING:  # torch is imported where the PyTorch module is needed, not before
    from .network import Wav2Lip


class LazyModel:
    """The Wav2Lip generator of one checkpoint on one device, loaded from disk on first use.

    It also holds what is made from it once per engine, not per job: the backends chosen
    for it (lipsync.generator.choice.backend_for), and the CPU threads they may use
    (`threads`; 0: lipsync.runtime.devices.cpu_threads), given here so no library's thread count
    depends on another's.
    """

    def __init__(self, checkpoint_path: str | None, device: str = "cpu", model: Wav2Lip | None = None,
                 threads: int = 0) -> None:
        self.checkpoint_path = checkpoint_path
        self.device = str(device)
        self.threads = threads if threads > 0 else cpu_threads()
        self._model = model
        self.lock = threading.RLock()  # loading, and choosing backends
        self.backends: dict[tuple[str, str, str], Any] = {}

    @classmethod
    def of(cls, model: Wav2Lip | LazyModel, device: str = "cpu") -> LazyModel:
        """`model` itself if lazy, else a new LazyModel around this loaded module (its own backends)."""
        if isinstance(model, LazyModel):
            return model
        return cls(getattr(model, "checkpoint_path", None), device, model)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self, weights: Weights | None = None) -> Wav2Lip:
        """The PyTorch module, loaded now if it was not yet (from `weights` when given, already read)."""
        with self.lock:
            if self._model is None:
                try:
                    from .network import build_model
                except ImportError:
                    raise torch_missing("The PyTorch model", "use --backend auto (OpenVINO on a CPU)") from None
                self._model = build_model(weights if weights is not None else self.weights(), self.device,
                                          self.checkpoint_path)
            return self._model

    def weights(self) -> Weights:
        """The generator's weights as numpy arrays: the loaded module's, else read from the checkpoint (no torch)."""
        if self._model is not None:
            from .network import state_as_numpy

            return state_as_numpy(self._model)
        if self.checkpoint_path is None:
            raise LipSyncError("No checkpoint to load the model from.")
        return read_weights(self.checkpoint_path)
