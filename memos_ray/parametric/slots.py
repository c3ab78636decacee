"""Several LoRA adapters resident on one base model, switched per forward pass.

A model worker keeps one base model and serves chats for many cubes, each possibly with its own
adapter. Swapping an adapter in (``set_adapter``, 1-8 ms) is far cheaper than loading it (tens of
ms) or loading a model (seconds), so adapters stay resident up to a byte budget and the least
recently used is evicted beyond it.

peft injects LoRA layers into the base model *in place*: once the first adapter is loaded, the
model object handed to :class:`AdapterSlots` is no longer a plain base model. Callers therefore
run every forward pass through ``slots.model`` inside ``with slots.use(name):``, which decides
exactly what is active: one named adapter, or none at all (LoRA layers disabled, so the output
is bit-identical to the base model's). When the last adapter goes, the wrapper is unloaded and
the model is the plain base model again.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from memos_ray.parametric.training import lora_config, state_nbytes
from memos_ray.types import AdapterSettings

_PREFIX = "slot-"  # peft warns about (and may mis-handle) adapter names that are substrings of "lora_"


WARM_ADAPTER = "memos-warm"  # see AdapterSlots.warm; never a slot's name (slots are prefixed)


def _peft_name(name: str) -> str:
    return _PREFIX + name


class AdapterSlots:
    """One base model, several named LoRA adapters resident at once (LRU under ``budget_bytes``).

    Thread-safe: every method holds one re-entrant lock, and :meth:`use` holds it for the whole
    ``with`` block, so an adapter can never be switched under another caller's forward pass.
    """

    def __init__(self, model: Any, budget_bytes: int, on_evict: Callable[[str], None] | None = None) -> None:
        if budget_bytes <= 0:
            raise ValueError("budget_bytes must be positive")
        self._base = model
        self._peft: Any = None  # the PeftModel, from the first load until the last adapter goes
        self._budget = budget_bytes
        self._on_evict = on_evict
        self._resident: OrderedDict[str, int] = OrderedDict()  # name -> bytes, least recently used first
        self._lock = threading.RLock()
        self._in_use = False
        self._pinned: str | None = None  # the adapter a ``use`` block runs with: never evicted under it
        self._loads: list[float] = []
        self._swaps: list[float] = []
        self._evictions = 0

    # ------------------------------------------------------------------ queries

    @property
    def model(self) -> Any:
        """The model to call inside :meth:`use`: the peft wrapper while adapters are resident."""
        return self._peft if self._peft is not None else self._base

    def resident(self) -> list[str]:
        """Resident adapter names, least recently used first."""
        with self._lock:
            return list(self._resident)

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._resident

    def resident_bytes(self) -> int:
        with self._lock:
            return sum(self._resident.values())

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "loads": len(self._loads),
                "swaps": len(self._swaps),
                "evictions": self._evictions,
                "last_load_ms": self._loads[-1] * 1e3 if self._loads else None,
                "mean_load_ms": sum(self._loads) / len(self._loads) * 1e3 if self._loads else None,
                "last_swap_ms": self._swaps[-1] * 1e3 if self._swaps else None,
                "mean_swap_ms": sum(self._swaps) / len(self._swaps) * 1e3 if self._swaps else None,
                "resident": len(self._resident),
                "resident_bytes": sum(self._resident.values()),
                "budget_bytes": self._budget,
            }

    # ------------------------------------------------------------------ loading

    def warm(self, settings: AdapterSettings) -> float:
        """Wrap the model now, with a permanent rank-1 adapter that is never activated (its B is zero).

        The first adapter otherwise pays for wrapping every target module (~150 ms more than later
        loads); with the wrapper in place each load only adds its own weights. ``settings`` gives the
        target modules the adapters will use. Seconds taken.
        """
        from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

        with self._lock:
            if self._peft is not None:
                return 0.0
            start = time.perf_counter()
            config = lora_config(settings.model_copy(update={"rank": 1}))
            self._peft = get_peft_model(self._base, config, adapter_name=WARM_ADAPTER)
            # one full add, fill and removal, so first-time costs inside peft are paid here too
            probe = _peft_name(WARM_ADAPTER)
            self._peft.add_adapter(probe, lora_config(settings))
            set_peft_model_state_dict(self._peft, get_peft_model_state_dict(self._peft, adapter_name=probe), probe)
            self._discard(probe)
            for p in self._peft.parameters():
                p.requires_grad_(False)
            self._peft.eval()
            return time.perf_counter() - start

    def load(self, name: str, settings: AdapterSettings, state: dict[str, np.ndarray]) -> float:
        """Make ``name`` resident from its state dict; seconds taken (0 if it already was).

        Least recently used adapters are evicted first to make room, so memory never peaks above
        the budget plus one adapter. An adapter larger than the whole budget is still loaded (alone):
        refusing it would leave the cube unservable.
        """
        if not name or "." in name:
            raise ValueError(f"invalid adapter name {name!r}")
        with self._lock:
            if name in self._resident:
                self._resident.move_to_end(name)
                return 0.0
            size = state_nbytes(state)
            self._evict_for(size)
            start = time.perf_counter()
            try:
                self._inject(name, settings, state)
            except BaseException:
                self._discard(_peft_name(name))
                raise
            self._resident[name] = size
            seconds = time.perf_counter() - start
            self._loads.append(seconds)
            return seconds

    def _inject(self, name: str, settings: AdapterSettings, state: dict[str, np.ndarray]) -> None:
        """Add the LoRA layers (on the meta device: their weights come from ``state``) and fill them."""
        import torch
        from peft import get_peft_model, set_peft_model_state_dict

        pname = _peft_name(name)
        config = lora_config(settings)
        if self._peft is None:
            self._peft = get_peft_model(self._base, config, adapter_name=pname, low_cpu_mem_usage=True)
        else:
            self._peft.add_adapter(pname, config, low_cpu_mem_usage=True)
        # Copied: a zero-copy array (object store, mmap) may be read-only, and the weights are assigned, not copied.
        tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in state.items()}
        result: Any = set_peft_model_state_dict(self._peft, tensors, adapter_name=pname, low_cpu_mem_usage=True)
        missing = [k for k in result.missing_keys if f".{pname}." in k]
        if result.unexpected_keys or missing:
            raise ValueError(
                f"adapter {name!r} does not fit the model: {len(missing)} missing keys, "
                f"unexpected {list(result.unexpected_keys)[:3]}"
            )
        for p in self._peft.parameters():
            p.requires_grad_(False)  # serving only: no autograd bookkeeping
        self._peft.eval()

    def _evict_for(self, size: int) -> None:
        """Evict least recently used adapters until ``size`` more bytes fit (the pinned one stays)."""
        while sum(self._resident.values()) + size > self._budget:
            victim = next((n for n in self._resident if n != self._pinned), None)
            if victim is None:
                return
            self._drop(victim)
            self._evictions += 1
            if self._on_evict is not None:
                self._on_evict(victim)

    def remove(self, name: str) -> bool:
        """Drop ``name`` (an explicit removal, not an eviction: ``on_evict`` is not called)."""
        with self._lock:
            if name not in self._resident:
                return False
            if name == self._pinned:
                raise RuntimeError(f"adapter {name!r} is in use")
            self._drop(name)
            return True

    def _drop(self, name: str) -> None:
        del self._resident[name]
        self._discard(_peft_name(name))

    def _discard(self, pname: str) -> None:
        """Delete a peft adapter; with none left, unload the wrapper: peft cannot run a PeftModel
        that has no adapter at all, and the plain base model is the cheapest exact base."""
        if self._peft is None:
            return
        if pname in self._peft.peft_config:
            with warnings.catch_warnings():  # "was active which is now deleted": expected, use() re-activates
                warnings.filterwarnings("ignore", message=".*was active which is now deleted")
                self._peft.delete_adapter(pname)
        if not self._peft.peft_config:
            self._base = self._peft.unload()
            self._peft = None

    # ------------------------------------------------------------------ running

    @contextmanager
    def use(self, name: str | None) -> Iterator[Any]:
        """Run the ``with`` block with adapter ``name`` active, or with no adapter (``None``): the
        base model's exact output. Yields :attr:`model`. Not nestable."""
        with self._lock:
            if self._in_use:
                raise RuntimeError("AdapterSlots.use is not nestable")
            if name is not None and name not in self._resident:
                raise KeyError(f"adapter {name!r} is not resident")
            self._in_use, self._pinned = True, name
            try:
                if name is None:
                    yield from self._run_base()
                else:
                    self._activate(name)
                    yield self.model
            finally:
                self._in_use, self._pinned = False, None

    def _run_base(self) -> Iterator[Any]:
        if self._peft is None:
            yield self._base
            return
        with self._peft.disable_adapter():  # LoRA layers return base_layer(x) untouched
            yield self._peft

    def _activate(self, name: str) -> None:
        pname = _peft_name(name)
        self._resident.move_to_end(name)
        if self._peft.active_adapter == pname:
            return
        start = time.perf_counter()
        self._peft.set_adapter(pname, inference_mode=True)
        self._swaps.append(time.perf_counter() - start)
