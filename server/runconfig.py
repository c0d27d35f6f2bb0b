"""Settings + model → the engine's start configuration (device-dependent defaults live here)."""

from __future__ import annotations

import shutil

from server.engine.vllm_engine import EngineConfig
from server.model import ModelInfo
from server.settings import Settings


def detect_device() -> str:
    return "cuda" if shutil.which("nvidia-smi") else "cpu"


def structured_backend(model: ModelInfo) -> str:
    """llguidance for Tekken tokenizers (Lark grammars with Mistral's special tokens);
    xgrammar for SentencePiece ones, which vLLM's guidance backend does not support."""
    return "xgrammar" if model.vocab.is_spm else "guidance"


def engine_config(settings: Settings, model: ModelInfo) -> EngineConfig:
    device = detect_device() if settings.device == "auto" else settings.device
    on_cpu = device == "cpu"
    enforce_eager = settings.enforce_eager if settings.enforce_eager is not None else on_cpu
    max_len = settings.max_model_len or (4096 if model.embedded else None)
    dtype = settings.dtype
    if dtype == "auto" and model.embedded and on_cpu:
        dtype = "float32"  # vLLM would downcast to bf16, slow on CPUs without AVX512-BF16
    return EngineConfig(
        model_dir=str(model.model_dir),
        served_model_name=model.id,
        max_model_len=max_len,
        device=device,
        tensor_parallel_size=settings.tensor_parallel_size,
        pipeline_parallel_size=settings.pipeline_parallel_size,
        dtype=dtype,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        max_num_seqs=settings.max_num_seqs,
        enforce_eager=enforce_eager,
        max_logprobs=settings.max_logprobs,
        compact_json=settings.compact_json,
        structured_backend=structured_backend(model),
        logits_processors=tuple(settings.logits_processors),
        extra=tuple(sorted(settings.engine_args.items())),
    )
