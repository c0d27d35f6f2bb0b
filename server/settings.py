"""One typed Settings object, loaded once at startup and passed explicitly.

Sources, lowest to highest precedence: built-in defaults < model preset (``configs/presets``)
< YAML file (``--config``) < environment (``MSERVE_<KEY>``) < command-line flags (``--key``).
Every key is a field below; unknown keys are rejected with one clear message each.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

ROOT = Path(__file__).resolve().parent.parent
PRESETS_DIR = ROOT / "configs" / "presets"
ENV_PREFIX = "MSERVE_"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mistral-serve"


class SettingsError(Exception):
    """Configuration mistakes, one line each, reported before anything starts."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- model ------------------------------------------------------------------
    preset: str | None = Field(None, description="Model preset name under configs/presets")
    model: str | None = Field(None, description="Weights directory; empty = embedded tiny model")
    served_model_name: str | None = Field(None, description="Model id clients send")
    aliases: list[str] = Field(default_factory=list, description="Extra accepted model ids")
    tokenizer: str | None = Field(None, description="Tokenizer file; default: found in model dir")
    tiny_tokenizer: str = Field("v3-spm", description="Tokenizer kind of the embedded tiny model")
    tiny_vision: bool = Field(False, description="Embedded tiny model with a vision encoder "
                              "(Pixtral format; tiny_tokenizer v7-, v11- or v13-tekken)")
    tool_parser: str | None = Field(None, description="Output parser name; default: by tokenizer")
    reasoning: Literal["auto", "none", "text_think"] = "auto"
    max_model_len: int | None = Field(None, ge=16)
    default_sampling: dict[str, Any] = Field(default_factory=dict)
    capabilities: dict[str, bool] = Field(default_factory=dict)
    reasoning_system_prompt: str | None = None

    # --- engine -----------------------------------------------------------------
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    dtype: str = "auto"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_num_seqs: int | None = Field(None, ge=1)
    enforce_eager: bool | None = None
    max_logprobs: int = Field(20, ge=0)
    compact_json: bool = Field(True, description="Constrained JSON without free whitespace")
    logits_processors: list[str] = Field(default_factory=list)
    engine_args: dict[str, Any] = Field(default_factory=dict, description="Passed to vLLM as is")
    cache_dir: Path = DEFAULT_CACHE

    # --- images (vision models) --------------------------------------------------
    image_limit: int = Field(10, ge=1, description="Images per request; also vLLM's "
                             "limit_mm_per_prompt, which sizes the encoder's memory")
    image_max_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Largest image file")
    image_max_pixels: int = Field(40_000_000, ge=1, description="Largest image (width x height), "
                                  "checked before decoding")
    image_decode_max_pixels: int = Field(
        25_000_000, ge=1, description="Pixels decoding may hold per image, checked on the header: "
        "full size for PNG, GIF, WebP and progressive JPEG; baseline JPEG at its reduced scale")
    image_decode_queue: int = Field(
        64, ge=1, description="Images admitted for decoding at once across requests; a request "
        "whose images do not fit gets a 429")
    image_decode_threads: int | None = Field(
        None, ge=1, description="Image decoding threads (default: CPUs, at most 4)")
    image_fetch: bool = Field(False, description="Fetch http(s) image URLs (off: data: URLs only)")
    image_fetch_domains: list[str] = Field(
        default_factory=list, description="Hosts image URLs may name: example.com, *.example.com, *")
    image_fetch_networks: list[str] = Field(
        default_factory=list, description="Private networks (CIDR) fetching may reach anyway")
    image_fetch_timeout: float = Field(10, gt=0, description="Seconds for one image fetch")

    # --- Responses API store -------------------------------------------------------
    responses_store: str = Field(
        "sqlite", description="Where stored responses live: 'sqlite' (a file under cache_dir), "
        "'sqlite:////abs/path.db', 'postgresql://user:pass@host/db' (shared by replicas), or 'off'")
    responses_ttl: int = Field(30 * 24 * 3600, ge=60, description="Seconds a stored response is kept")
    responses_max_rows: int = Field(100_000, ge=1, description="Stored responses kept at most, "
                                    "all keys together (owners over their fair share lose their "
                                    "oldest first)")
    responses_max_bytes: int = Field(4 * 1024**3, ge=1024**2, description="Bytes of stored "
                                     "responses kept at most, all keys together (as max_rows)")
    responses_max_rows_per_key: int = Field(10_000, ge=1, description="Stored responses kept per "
                                            "API key (its own oldest go first)")
    responses_max_bytes_per_key: int = Field(256 * 1024**2, ge=1024, description="Bytes of "
                                             "stored responses kept per API key (its own oldest "
                                             "go first)")
    responses_max_record_bytes: int = Field(16 * 1024**2, ge=1024, description="Largest response "
                                            "(input items + response) a request may store; more "
                                            "is a 400 before generating")
    responses_max_chain_depth: int = Field(1000, ge=1, le=100_000, description="Stored responses "
                                           "a previous_response_id chain may load; more is a 400")
    responses_max_chain_bytes: int = Field(64 * 1024**2, ge=1024, description="Bytes a "
                                           "previous_response_id chain may load; more is a 400")

    # --- Anthropic Messages API -----------------------------------------------------
    accept_claude_models: bool = Field(
        False, description="/v1/messages answers any 'claude-*' model name with the served model "
        "(Claude Code's built-in names); off: only the served id and aliases")

    # --- server -----------------------------------------------------------------
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    api_keys: list[SecretStr] = Field(default_factory=list)
    api_key_file: Path | None = None
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Largest request body "
                                "(images come base64-encoded in it)")
    max_n: int = Field(16, ge=1)
    max_completion_choices: int = Field(
        64, ge=1, description="Choices one /v1/completions request may ask for (prompts x n)")

    # --- input budgets (server/budgets.py): what one request may cost ------------------
    max_json_depth: int = Field(64, ge=8, le=200, description="Deepest nesting of any JSON a "
                                "request carries (messages, items, schemas, tools, metadata); at most 200, below "
                                "the 255 levels orjson writes")
    max_json_values: int = Field(200_000, ge=1000, description="JSON values in one request body "
                                 "(counted as its commas and brackets)")
    max_schema_bytes: int = Field(256 * 1024, ge=1024, description="Largest JSON schema (response "
                                  "format, structured_outputs, one tool's parameters), compact")
    max_tools: int = Field(128, ge=1, description="Tools in one request")
    max_stop_strings: int = Field(16, ge=1, description="Stop strings in one request")
    max_stop_chars: int = Field(1000, ge=1, description="Longest stop string (characters)")
    schema_cache_bytes: int = Field(64 * 1024 * 1024, ge=0, description="Memory for what is "
                                    "derived from schemas seen before (0: no cache)")
    max_inflight_requests: int | None = Field(
        None, ge=1, description="Requests admitted at once (running + queued); more get 429")
    max_queued_requests: int | None = Field(
        None, ge=0, description="Admitted requests beyond the engine's batch (max_num_seqs); more get 429")
    request_timeout: float | None = Field(None, gt=0, description="Seconds before a request is aborted")
    api_processes: int = Field(
        1, ge=1, le=64, description="API server processes over one engine core, each with its own "
        "event loop and vLLM client, sharing one port (vllm serve --api-server-count); more than 1 "
        "when one core cannot keep up with the engine's tokens (docs/deployment.md)")
    drain_timeout: float = Field(30, ge=0, description="Seconds in-flight requests get after SIGTERM")
    keep_alive_timeout: float = Field(
        5, gt=0, description="Seconds an idle client connection stays open (vLLM's "
        "VLLM_HTTP_TIMEOUT_KEEP_ALIVE); behind a load balancer, set it above the balancer's idle "
        "timeout, or a request it sends on a connection the server is closing fails")
    metrics_open: bool = Field(False, description="Serve /metrics without an API key")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    log_prompts: bool = Field(False, description="Include prompt text in request logs")

    @field_validator("image_fetch_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not a network (CIDR such as 10.0.0.0/8)") from None
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            problem = key_problem(key.get_secret_value())
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("served_model_name", "model", "tokenizer", "tool_parser", "preset")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value or None

    # ------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        if self.model:
            return self.model.rstrip("/")
        return "tiny-mistral"

    def resolved_api_keys(self) -> list[str]:
        keys = [k.get_secret_value() for k in self.api_keys if k.get_secret_value()]
        if self.api_key_file is not None:
            try:
                text = self.api_key_file.read_text()
            except OSError as exc:
                raise SettingsError(f"api_key_file: cannot read {self.api_key_file}: {exc.strerror}")
            for key in split_list(text.replace("\n", ",")):
                problem = key_problem(key)
                if problem:
                    raise SettingsError(f"api_key_file: {problem}")
                keys.append(key)
        return keys


def split_list(raw: str) -> list[str]:
    """One rule for list settings from text (environment, command line, key file): items are
    separated by commas, and blank items are dropped."""
    return [part.strip() for part in raw.split(",") if part.strip()]


_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an API key (None: it can). Keys are printable ASCII without
    spaces or commas, so a key reads the same in every source and in every header."""
    if not _KEY_CHARS.match(key) or "," in key:
        return ("an API key must be printable ASCII with no spaces or commas (commas separate "
                "keys in MSERVE_API_KEYS, --api-keys and api_key_file)")
    return None


FIELDS = Settings.model_fields
_LIST_FIELDS = {"aliases", "api_keys", "logits_processors", "image_fetch_domains",
                "image_fetch_networks"}
_DICT_FIELDS = {"default_sampling", "engine_args", "capabilities"}


def _parse_env_value(key: str, raw: str) -> Any:
    if key in _LIST_FIELDS:
        return split_list(raw)
    if key in _DICT_FIELDS:
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise SettingsError(f"{ENV_PREFIX}{key.upper()}: expected a JSON object")
    return raw


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise SettingsError(f"{what}: cannot read {path}: {exc.strerror}")
    except yaml.YAMLError as exc:
        raise SettingsError(f"{what}: {path} is not valid YAML: {exc}")
    if not isinstance(data, dict):
        raise SettingsError(f"{what}: {path} must hold a mapping of settings")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise SettingsError(f"{what}: unknown setting(s) in {path}: {', '.join(unknown)}")
    return data


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("--config", type=Path, help="YAML settings file")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved settings and where each came from, then exit")
    for name, field in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        help_text = field.description or ""
        if name in _LIST_FIELDS:
            parser.add_argument(flag, dest=name, action="append", default=None, help=help_text)
        elif field.annotation in (bool, bool | None):
            parser.add_argument(flag, dest=name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(flag, dest=name, default=None, help=help_text)
    return parser


def load_settings(
    argv: list[str] | None = None, env: dict[str, str] | None = None
) -> tuple[Settings, dict[str, str], bool]:
    """Resolve settings from every source. Returns (settings, source per key, print_config)."""
    env = dict(os.environ) if env is None else env
    args = build_parser().parse_args(argv)
    cli = {k: v for k, v in vars(args).items() if k in FIELDS and v is not None}
    for key in _LIST_FIELDS & set(cli):  # --api-keys a,b --api-keys c: three keys, as in env
        cli[key] = [item for raw in cli[key] for item in split_list(raw)]
    for key in _DICT_FIELDS & set(cli):
        cli[key] = _parse_env_value(key, cli[key])
    env_values: dict[str, Any] = {}
    for key in FIELDS:
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None:
            env_values[key] = _parse_env_value(key, raw)
    unknown_env = sorted(
        k for k in env if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX):].lower() not in FIELDS
    )
    if unknown_env:
        raise SettingsError(f"unknown environment setting(s): {', '.join(unknown_env)}")
    file_values = _read_yaml(args.config, "--config") if args.config else {}

    preset = cli.get("preset") or env_values.get("preset") or file_values.get("preset")
    preset_values: dict[str, Any] = {}
    if preset:
        path = PRESETS_DIR / f"{preset}.yaml"
        if not path.exists():
            raise SettingsError(f"preset: unknown preset {preset!r}; known: {', '.join(preset_names())}")
        preset_values = _read_yaml(path, "preset")

    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    layers = [("preset " + str(preset), preset_values), (f"file {args.config}", file_values),
              ("env", env_values), ("cli", cli)]
    for label, values in layers:
        for key, value in values.items():
            if key in _DICT_FIELDS and isinstance(merged.get(key), dict) and isinstance(value, dict):
                value = {**merged[key], **value}
            merged[key] = value
            sources[key] = label
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
    return settings, sources, args.print_config


def redact_url(url: str) -> str:
    """A database URL with its password (``user:password@`` or ``?password=``) masked."""
    url = re.sub(r"^([^:/]+://[^:@/]*):[^/]*@", r"\1:***@", url)
    return re.sub(r"(?<=[?&])password=[^&]*", "password=***", url)


def describe(settings: Settings, sources: dict[str, str]) -> str:
    """Human-readable resolved configuration; secrets are masked."""
    lines = []
    for key in FIELDS:
        value = getattr(settings, key)
        if key == "api_keys":
            value = [f"<{len(value)} key(s)>"] if value else []
        elif key == "responses_store":
            value = redact_url(value)
        lines.append(f"{key:24} = {value!r:50} ({sources.get(key, 'default')})")
    return "\n".join(lines)
