"""Settings + model → the engine's start configuration (device-dependent defaults live here)."""

from __future__ import annotations

import os
import shutil
import subprocess

from server.engine.vllm_engine import EngineConfig
from server.model import ModelInfo
from server.settings import Settings, SettingsError


def detect_device() -> str:
    return "cuda" if shutil.which("nvidia-smi") else "cpu"


def visible_gpus() -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists."""
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is not None:
        return len([d for d in mask.split(",") if d.strip() and d.strip() != "-1"])
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def check_parallelism(settings: Settings, gpus: int) -> None:
    """tensor x pipeline parallel must fit the visible GPUs (unless vLLM spans several nodes)."""
    multi_node = settings.engine_args.get("nnodes", 1) > 1 or \
        settings.engine_args.get("distributed_executor_backend") == "ray"
    need = settings.tensor_parallel_size * (1 if multi_node else settings.pipeline_parallel_size)
    if need > gpus:
        raise SettingsError(
            f"tensor_parallel_size={settings.tensor_parallel_size} x pipeline_parallel_size="
            f"{settings.pipeline_parallel_size} needs {need} GPU(s) on this node, but {gpus} "
            "are visible (check CUDA_VISIBLE_DEVICES and the pod's nvidia.com/gpu limit)")


def engine_config(settings: Settings, model: ModelInfo) -> EngineConfig:
    device = detect_device() if settings.device == "auto" else settings.device
    on_cpu = device == "cpu"
    if not on_cpu:
        check_parallelism(settings, visible_gpus())
    enforce_eager = settings.enforce_eager if settings.enforce_eager is not None else on_cpu
    max_len = settings.max_model_len or (4096 if model.embedded else None)
    dtype = settings.dtype
    if dtype == "auto" and model.embedded and on_cpu:
        dtype = "float32"  # vLLM would downcast to bf16, slow on CPUs without AVX512-BF16
    extra = dict(settings.engine_args)
    if model.vision:
        # vLLM sizes the encoder's memory (profiling, encoder cache) by this limit; the server
        # refuses requests over it before they reach the engine.
        extra.setdefault("limit_mm_per_prompt", {"image": model.image_limit})
        if model.embedded:  # the tiny vision model is laid out as Mistral publishes its own
            extra.setdefault("config_format", "mistral")
            extra.setdefault("load_format", "mistral")
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
        structured_backend=model.structured_backend,
        logits_processors=tuple(settings.logits_processors),
        extra=tuple(sorted(extra.items())),
        think_token_ids=model.think_token_ids,
    )
