"""Tiny random-weight Mistral checkpoints built next to real Mistral tokenizer files.

The embedded default model and every end-to-end test use these: the serving path is the real
one (vLLM loads a ``MistralForCausalLM`` with ``tokenizer_mode="mistral"``), only the weights are
random. Tokenizer generations that mistral-common does not ship as files (v7/v11/v13 Tekken) are
derived from its Tekken file by setting the ``version`` and declaring the special tokens.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mistral_common

DATA_DIR = Path(mistral_common.__file__).parent / "data"

# Bump when the files this module writes change, so cached tiny models are rebuilt.
FORMAT = 5

# name -> (source file in mistral_common/data, tekken version override or None)
TOKENIZERS: dict[str, tuple[str, str | None]] = {
    "v3-spm": ("mistral_instruct_tokenizer_240323.model.v3", None),
    "v7-spm": ("mistral_instruct_tokenizer_241114.model.v7", None),
    "v3-tekken": ("tekken_240718.json", None),
    "v7-tekken": ("tekken_240718.json", "v7"),
    "v11-tekken": ("tekken_240718.json", "v11"),
    "v13-tekken": ("tekken_240718.json", "v13"),
}

# Special tokens of released v11+ Tekken files: the 20 legacy ranks, then these.
_EXTRA_SPECIALS = {
    "v7": [],
    "v11": ["[ARGS]", "[CALL_ID]"],
    "v13": ["[ARGS]", "[CALL_ID]", "[THINK]", "[/THINK]"],
}
_LEGACY = [
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
    "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
]
# Where the extra tokens sit (mistral-common's own fixtures use 32/33 for [ARGS]/[CALL_ID]).
_EXTRA_RANK = {"[ARGS]": 32, "[CALL_ID]": 33, "[THINK]": 34, "[/THINK]": 35}


# Tiny vision models: Tekken generations that released Mistral vision models use.
VISION_KINDS = ("v7-tekken", "v11-tekken", "v13-tekken")
# The ``image`` section of the tiny vision tokenizer: 8-pixel patches merged 2x2, images scaled
# down to at most 64 px, so an image is a grid of at most 4x4 [IMG] tokens.
TINY_IMAGE = {"image_patch_size": 8, "max_image_size": 64, "spatial_merge_size": 2}


def write_tokenizer(kind: str, out_dir: Path, *, image: dict | None = None) -> Path:
    """Write the tokenizer file for ``kind`` into ``out_dir`` under the name vLLM looks for.

    ``image``: an ``image`` section (Tekken only), which makes mistral-common render images."""
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; known: {', '.join(TOKENIZERS)}")
    source, version = TOKENIZERS[kind]
    src = DATA_DIR / source
    out_dir.mkdir(parents=True, exist_ok=True)
    if not source.endswith(".json"):
        dest = out_dir / ("tokenizer.model." + source.rsplit(".", 1)[-1])
        shutil.copyfile(src, dest)
        return dest
    data = json.loads(src.read_text())
    if version is not None:
        data["config"]["version"] = version
        ranks = {name: i for i, name in enumerate(_LEGACY)}
        ranks.update({name: _EXTRA_RANK[name] for name in _EXTRA_SPECIALS[version]})
        by_rank = {rank: name for name, rank in ranks.items()}
        # Tekkenizer indexes special tokens by list position: fill the gaps so position == rank.
        data["special_tokens"] = [
            {"rank": rank, "token_str": by_rank.get(rank, f"<SPECIAL_{rank}>"), "is_control": True}
            for rank in range(max(by_rank) + 1)
        ]
    if image is not None:
        data["image"] = dict(image)
    dest = out_dir / "tekken.json"
    dest.write_text(json.dumps(data))
    return dest


def vocab_size_of(tokenizer_file: Path) -> int:
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    return MistralTokenizer.from_file(str(tokenizer_file)).instruct_tokenizer.tokenizer.n_words


def build_tiny_model(
    out_dir: Path,
    kind: str = "v3-spm",
    *,
    hidden_size: int = 256,
    num_layers: int = 2,
    head_dim: int = 64,
    max_position_embeddings: int = 4096,
    seed: int = 0,
    vision: bool = False,
) -> Path:
    """Create (once) a random ``MistralForCausalLM`` with the ``kind`` tokenizer in ``out_dir``.

    ``vision``: a Pixtral-format checkpoint instead (see ``_write_pixtral``).
    Returns ``out_dir``. A finished build is marked by ``.complete`` so concurrent or
    interrupted runs never leave a half-written model that looks valid.
    """
    out_dir = Path(out_dir)
    if (out_dir / ".complete").exists():
        return out_dir
    import torch
    from safetensors.torch import save_file

    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    if vision:
        if kind not in VISION_KINDS:
            raise ValueError(f"tiny vision models use a Tekken tokenizer of {', '.join(VISION_KINDS)}; "
                             f"not {kind!r}")
        _write_pixtral(tmp, kind, hidden_size=hidden_size, num_layers=num_layers,
                       head_dim=head_dim, max_position_embeddings=max_position_embeddings, seed=seed)
        return _finish(tmp, out_dir, kind + " vision")
    tokenizer_file = write_tokenizer(kind, tmp)
    vocab = vocab_size_of(tokenizer_file)
    heads = hidden_size // head_dim
    config = {
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
        "head_dim": head_dim,
        "vocab_size": vocab,
        "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": 1e-5,
        "rope_theta": 1000000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "sliding_window": None,
        "torch_dtype": "float32",  # CPUs without AVX512-BF16 run bf16 far slower
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * 0.02)

    kv = config["num_key_value_heads"] * head_dim
    inter = config["intermediate_size"]
    tensors = {"model.embed_tokens.weight": rand(vocab, hidden_size),
               "model.norm.weight": torch.ones(hidden_size)}
    for i in range(num_layers):
        tensors.update(_layer(f"model.layers.{i}.", rand, hidden=hidden_size, q=heads * head_dim,
                              kv=kv, inter=inter, mistral=False))
    save_file(tensors, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    (tmp / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    return _finish(tmp, out_dir, kind)


# A decoder layer's weights: (role, HF name, Mistral name), in the order they are drawn.
_LAYER = (("q", "self_attn.q_proj", "attention.wq"), ("k", "self_attn.k_proj", "attention.wk"),
          ("v", "self_attn.v_proj", "attention.wv"), ("o", "self_attn.o_proj", "attention.wo"),
          ("gate", "mlp.gate_proj", "feed_forward.w1"), ("up", "mlp.up_proj", "feed_forward.w3"),
          ("down", "mlp.down_proj", "feed_forward.w2"))
_NORMS = (("input_layernorm", "attention_norm"), ("post_attention_layernorm", "ffn_norm"))


def _layer(prefix: str, rand: Any, *, hidden: int, q: int, kv: int, inter: int,
           mistral: bool) -> dict[str, Any]:
    """One layer's random weights (norms at one), under HF or Mistral (consolidated) names."""
    import torch

    shapes = {"q": (q, hidden), "k": (kv, hidden), "v": (kv, hidden), "o": (hidden, q),
              "gate": (inter, hidden), "up": (inter, hidden), "down": (hidden, inter)}
    out = {prefix + (m if mistral else h) + ".weight": rand(*shapes[role]) for role, h, m in _LAYER}
    out.update({prefix + (m if mistral else h) + ".weight": torch.ones(hidden) for h, m in _NORMS})
    return out


def _finish(tmp: Path, out_dir: Path, label: str) -> Path:
    (tmp / ".complete").write_text(label + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def _write_pixtral(out: Path, kind: str, *, hidden_size: int, num_layers: int, head_dim: int,
                   max_position_embeddings: int, seed: int) -> None:
    """A random Pixtral-format checkpoint, laid out as Mistral publishes its vision models.

    ``params.json`` with a ``vision_encoder`` section, ``consolidated.safetensors`` with Mistral's
    weight names and ``tekken.json`` with an ``image`` section: vLLM serves it as
    ``PixtralForConditionalGeneration`` (``config_format``/``load_format`` ``mistral``), whose
    processor takes the image grids mistral-common already rendered into the prompt as they are.
    The encoder is as small as works on CPU (attention head_dim 64), with the patch merger and
    the pre-projector norm of Mistral Small 3.1/3.2 and Ministral 3.
    """
    import torch
    from safetensors.torch import save_file

    tokenizer_file = write_tokenizer(kind, out, image=TINY_IMAGE)
    vocab = vocab_size_of(tokenizer_file)
    heads = hidden_size // head_dim
    kv_heads = max(1, heads // 2)
    inter = hidden_size * 2
    v_hidden, v_heads, v_layers, v_inter = 128, 2, 1, 256
    patch, merge = TINY_IMAGE["image_patch_size"], TINY_IMAGE["spatial_merge_size"]
    params = {
        "dim": hidden_size, "n_layers": num_layers, "head_dim": head_dim, "hidden_dim": inter,
        "n_heads": heads, "n_kv_heads": kv_heads, "rope_theta": 1000000.0, "norm_eps": 1e-5,
        "vocab_size": vocab, "max_seq_len": max_position_embeddings,
        "max_position_embeddings": max_position_embeddings, "tied_embeddings": False,
        "dtype": "float32",  # CPUs without AVX512-BF16 run bf16 far slower
        "vision_encoder": {
            "hidden_size": v_hidden, "num_channels": 3, "image_size": TINY_IMAGE["max_image_size"],
            "max_image_size": TINY_IMAGE["max_image_size"], "patch_size": patch,
            "rope_theta": 10000.0, "intermediate_size": v_inter, "num_hidden_layers": v_layers,
            "num_attention_heads": v_heads, "adapter_bias": False, "mm_projector_id": "patch_merge",
            "spatial_merge_size": merge, "add_pre_mm_projector_layer_norm": True,
            "image_token_id": 10, "image_break_token_id": 12, "image_end_token_id": 13,
        },
    }
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    kv = kv_heads * head_dim
    tensors = {"tok_embeddings.weight": rand(vocab, hidden_size),
               "output.weight": rand(vocab, hidden_size),
               "norm.weight": torch.ones(hidden_size)}
    for i in range(num_layers):
        tensors.update(_layer(f"layers.{i}.", rand, hidden=hidden_size, q=heads * head_dim, kv=kv,
                              inter=inter, mistral=True))
    # The vision side gets larger weights so that different images move the logits visibly.
    tensors.update({
        "vision_encoder.patch_conv.weight": rand(v_hidden, 3, patch, patch, scale=0.2),
        "vision_encoder.ln_pre.weight": torch.ones(v_hidden),
        "pre_mm_projector_norm.weight": torch.ones(v_hidden),
        "patch_merger.merging_layer.weight": rand(v_hidden, v_hidden * merge * merge, scale=0.1),
        "vision_language_adapter.w_in.weight": rand(hidden_size, v_hidden, scale=0.2),
        "vision_language_adapter.w_out.weight": rand(hidden_size, hidden_size, scale=0.2),
    })
    for i in range(v_layers):
        tensors.update(_layer(f"vision_encoder.transformer.layers.{i}.", rand, hidden=v_hidden,
                              q=v_hidden, kv=v_hidden, inter=v_inter, mistral=True))
    save_file(tensors, str(out / "consolidated.safetensors"))
    (out / "params.json").write_text(json.dumps(params, indent=1))
