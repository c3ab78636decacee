"""Activation memory: KV caches of memory prefixes (``kvcache``: build, inject, persist), where a worker
keeps them (``store``: the KV store interface and its local backend) and what a prefix holds
(``prompt``)."""
