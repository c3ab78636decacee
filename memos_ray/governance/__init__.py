"""Governance: identities and API keys (``identity``), roles on cubes (``access``), the hash-chained audit
log (``audit``), redaction on ingest (``redact``), and the SQLite files they share (``sqlite``)."""
