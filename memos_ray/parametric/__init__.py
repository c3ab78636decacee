"""Parametric memory: LoRA training from memories (``training``), resident adapters on one model
(``slots``), a cube's adapter versions on disk (``registry``)."""
