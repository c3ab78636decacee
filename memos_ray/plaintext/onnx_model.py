"""The sentence model under ONNX Runtime: exported once from its PyTorch weights, optionally quantized.

Why: on 2 cores the embedder is what limits ingest. Each sentence runs alone: a batch pads its short
sentences to its longest, and on 2 cores the padding costs more than batching saves. Measured on
LoCoMo's 3,435 turns as the Embedder receives them, 64 at a time (2 threads; ``make bench-retrieval``):
PyTorch through sentence-transformers (batched) 73 sentences/s; ONNX Runtime in float32, batched, 139/s
(the same vectors, cosine > 0.99999), alone ~200/s; int8 weights (dynamic, per-channel, matrix products
only) alone ~600/s, cosine 0.99 to float32 on average, LoCoMo R@10 within 0.001. Running alone matters
for int8 beyond speed: dynamic quantization scales activations per tensor, so in a batch a sentence's
vector depended on its companions (0.01 per component), and an embedder must give one text one vector.
Quantizing every operator (the embedding table too) lost 0.009 of R@10, so it is not offered.

Sentences run side by side, one thread each, not one sentence on every thread: a run of one short
sentence is many small operators, and splitting each over 2 threads meets a barrier per operator, where
a thread preempted by any other process (Ray's, on a shared machine) stalls its partner. Measured on 1,024
of the foundation corpus's sentences in batches of 64, int8: alone 180/s (2 threads per run) against 294/s
(two runs at once); with the service idle beside it 155/s against 221/s; the same vectors.

The export wraps the model with its pooling and L2 normalisation, so the graph gives the sentence
vector itself; the tokenizer is the model's own ``tokenizer.json`` (the ``tokenizers`` library), with
the model's ``max_seq_length``. Exported files are cached under the embedder's cache folder, keyed by
the weights' hash, the export's version and the quantization: PyTorch is imported only to export.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

EXPORT_VERSION = 1
OnnxPrecision = Literal["float32", "int8"]


def _pooling(model_path: Path) -> str:
    """The sentence-transformers pooling of the folder: mean or cls (what the export can reproduce)."""
    config = model_path / "1_Pooling" / "config.json"
    if not config.exists():
        return "mean"
    modes = json.loads(config.read_text())
    if modes.get("pooling_mode_mean_tokens"):
        return "mean"
    if modes.get("pooling_mode_cls_token"):
        return "cls"
    raise ValueError(f"{model_path}: only mean or CLS pooling can be exported to ONNX; use embedder.backend=torch")


def max_seq_length(model_path: Path) -> int:
    config = model_path / "sentence_bert_config.json"
    return int(json.loads(config.read_text()).get("max_seq_length", 256)) if config.exists() else 256


def _weights_digest(model_path: Path) -> str:
    h = hashlib.sha256(f"onnx-export-v{EXPORT_VERSION}\n".encode())
    for name in [*sorted(p.name for p in model_path.glob("*.safetensors")), "config.json"]:
        with (model_path / name).open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()[:16]


def exported(model_path: Path, precision: OnnxPrecision, cache_dir: Path) -> Path:
    """The ONNX file of the model at ``precision``: from the cache, or exported (and quantized) there now."""
    digest = _weights_digest(model_path)
    path = cache_dir / f"sentence-{digest}-{precision}.onnx"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    fp32 = cache_dir / f"sentence-{digest}-float32.onnx"
    if not fp32.exists():
        _export(model_path, fp32)
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        quantize_dynamic(fp32, tmp, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
        tmp.replace(path)
    return path


def _export(model_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    pooling = _pooling(model_path)
    model = AutoModel.from_pretrained(str(model_path)).eval()

    class Sentence(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            hidden = out.last_hidden_state
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                weight = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weight).sum(1) / weight.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    sample = AutoTokenizer.from_pretrained(str(model_path))(
        ["a sentence", "another one here"], padding=True, return_tensors="pt"
    )
    axes = {name: {0: "batch", 1: "tokens"} for name in ("input_ids", "attention_mask", "token_type_ids")}
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with torch.no_grad():
        torch.onnx.export(
            Sentence().eval(),
            (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"]),
            str(tmp),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["embedding"],
            dynamic_axes={**axes, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(out)


class OnnxSentenceModel:
    """Sentence vectors from an exported model."""

    def __init__(self, model_path: Path, precision: OnnxPrecision, cache_dir: Path, num_threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()  # one thread per run; runs go side by side (see the module's notes)
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.threads = num_threads
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix="onnx") if num_threads > 1 else None
        self.session = ort.InferenceSession(
            str(exported(model_path, precision, cache_dir)), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_seq_length(model_path))
        self.tokenizer.no_padding()
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def vocabulary(self) -> list[str]:
        vocab = self.tokenizer.get_vocab()
        return sorted(vocab, key=vocab.__getitem__)

    def encode(self, texts: list[str]) -> np.ndarray:
        """One run per sentence: no padding, and a sentence's vector never depends on its companions.
        Up to ``threads`` sentences run at once, each on one thread (the session is safe to share)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        ids = [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]
        if self._pool is None or len(ids) == 1:
            self._run(ids, out, 0, 1)
        else:
            parts = min(self.threads, len(ids))
            list(self._pool.map(lambda k: self._run(ids, out, k, parts), range(parts)))
        return out

    def _run(self, ids: list[list[int]], out: np.ndarray, first: int, step: int) -> None:
        for r in range(first, len(ids), step):  # interleaved: long and short sentences spread evenly
            row = np.array([ids[r]], dtype=np.int64)
            feed = {"input_ids": row, "attention_mask": np.ones_like(row), "token_type_ids": np.zeros_like(row)}
            out[r] = self.session.run(None, feed)[0][0]
