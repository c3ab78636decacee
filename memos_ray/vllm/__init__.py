"""The vLLM backend of the model workers (the ``[vllm]`` extra): the engine and memos-ray's KV connector."""
