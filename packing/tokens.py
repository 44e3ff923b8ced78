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
every sequence, as InternVL's preprocess functions add it. Loading tokenizers: packing/tokenizer.py.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from curation.core.conversations import IMAGE_PLACEHOLDER, Turn
from packing.templates import INTERNVL_SYSTEM, TEMPLATES, detect_template, resolve_system_prompt
from packing.tiling import TOKENS_PER_TILE
from packing.tokenizer import IMG_CONTEXT, IMG_END, IMG_START, load_tokenizer

IGNORE_INDEX = -100


class EncodeError(ValueError):
    """A sample that cannot be encoded; `reason` is a code from curation/core/reasons.py."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


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
