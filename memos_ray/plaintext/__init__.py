"""Plaintext memory: a cube's versioned memories (``cube``), the in-memory hybrid index (``index``),
durable rows on Milvus (``storage``), text normalisation (``text``), the MemReader (``reader``) and
the sentence encoder (``embedding``)."""
