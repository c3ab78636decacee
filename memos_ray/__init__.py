"""memos-ray core: the data model, memory types, storage, text and configuration (no Ray actors)."""

__version__ = "0.1.0"
