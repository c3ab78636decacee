"""Request builders for parametric memory (LoRA adapters: training jobs, versions, the active one),
used by both SDK clients in ``memos_ray/client/clients.py``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from memos_ray.client._request import Call, body_of, given, no_content, seg
from memos_ray.types import AdapterList, AdapterSettings, MemoryKind, TrainingJob, TrainRequest


class AdapterCalls:
    """Request builders for parametric memory (LoRA adapters)."""

    @staticmethod
    def train_adapter(
        cube_id: str,
        *,
        settings: AdapterSettings | Mapping[str, Any] | None = None,
        kinds: Sequence[MemoryKind | str] | None = None,
        tags_any: Sequence[str] | None = None,
        memory_ids: Sequence[str] | None = None,
        max_memories: int | None = None,
        activate: bool | None = None,
    ) -> Call[TrainingJob]:
        """Start training an adapter from the cube's memories (202): follow it with :meth:`training_job`."""
        fields = given(
            settings=settings,
            kinds=list(kinds) if kinds is not None else None,
            tags_any=list(tags_any) if tags_any is not None else None,
            memory_ids=list(memory_ids) if memory_ids is not None else None,
            max_memories=max_memories,
            activate=activate,
        )
        path = f"/v1/cubes/{seg(cube_id)}/adapters"
        return Call("POST", path, TrainingJob.model_validate, json=body_of(TrainRequest, fields))

    @staticmethod
    def training_job(job_id: str) -> Call[TrainingJob]:
        return Call("GET", f"/v1/jobs/{seg(job_id)}", TrainingJob.model_validate)

    @staticmethod
    def adapters(cube_id: str) -> Call[AdapterList]:
        """The cube's adapter versions and the active one."""
        return Call("GET", f"/v1/cubes/{seg(cube_id)}/adapters", AdapterList.model_validate)

    @staticmethod
    def activate_adapter(cube_id: str, adapter_id: str | None) -> Call[AdapterList]:
        """Choose the adapter chat runs under (None: the base model)."""
        path = f"/v1/cubes/{seg(cube_id)}/adapters/active"
        return Call("PUT", path, AdapterList.model_validate, json={"adapter_id": adapter_id})

    @staticmethod
    def delete_adapter(cube_id: str, adapter_id: str) -> Call[None]:
        return Call("DELETE", f"/v1/cubes/{seg(cube_id)}/adapters/{seg(adapter_id)}", no_content)
