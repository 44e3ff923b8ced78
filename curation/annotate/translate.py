"""Translation of conversation rows (InternVL 1.5's bilingual data): detect a row's language, ask an
LLM backend to translate every turn into the recipe pair's target, check each output, and emit the
translated row (marked with the id it came from) or a rejection with a reason code.

Checks, per turn: not empty, not cut at max_new_tokens, the `<image>` count unchanged, not the
source text repeated (small models echo it before or after their attempt), the length ratio (non-space characters, translated / source) inside the pair's bounds; per row: the translated
text detected (lingua, filters.quality.language) as the target with at least `min_confidence`. Leading and
trailing `<image>` placeholders (InternVL's "<image>\\n..." prefix) are taken off before the LLM sees
the text and put back after; placeholders inside the text are the model's to keep, and checked.
Turns without letters (numbers, option letters) are copied, not translated. Plain objects, no Beam.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Literal, Sequence

from curation.annotate.config import LlmConfig, _format_keys
from curation.core.config import ConfigError, SamplingConfig, ShardConfig
from curation.core.conversations import IMAGE_PLACEHOLDER, Conversation, PreferencePair
from curation.core.reasons import check_reason
from curation.core.records import Rejection, UidConfig, Verdict, first_kept_per_uid
from filters.quality.language import check_codes, detect, script_of_language

DEFAULT_PROMPT = ("Translate the following {source} text into {target}. Keep every <image> tag exactly as it is. "
                  "Reply with the translation only.\n\n{text}")
DEFAULT_NAMES = {"en": "English", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "fr": "French", "de": "German",
                 "es": "Spanish", "ru": "Russian", "pt": "Portuguese", "it": "Italian", "ar": "Arabic", "vi": "Vietnamese"}
# translated / source non-space characters: one Chinese character carries about 2-4 English letters
DEFAULT_RATIOS = {"en-zh": [0.12, 1.0], "zh-en": [1.0, 8.0], "default": [0.4, 2.5]}
BACK_ROLES = {"user": "human", "assistant": "gpt", "system": "system", "pretrain": "pretrain"}
_EDGES = re.compile(rf"^((?:\s*{re.escape(IMAGE_PLACEHOLDER)})*\s*)(.*?)(\s*(?:{re.escape(IMAGE_PLACEHOLDER)}\s*)*)$",
                    re.DOTALL)


@dataclass(frozen=True)
class TranslateConfig:
    """The translate recipe (configs/translate.yaml): the LLM, the language pairs (one target per
    source language, so every input row ends in exactly one manifest row), the prompt and the checks."""

    llm: LlmConfig = field(default_factory=lambda: LlmConfig(sampling=SamplingConfig(max_new_tokens=512)))
    # [source, target] ISO 639-1 codes, one target per source; a row detected in no source: no_translation_pair
    pairs: list[list[str]] = field(default_factory=lambda: [["en", "zh"], ["zh", "en"]])
    prompt: str = DEFAULT_PROMPT  # a format string over {source}, {target} (language names) and {text}
    system_prompt: str | None = None  # a system message before every request; null: none
    # language code -> the name filled into {source} / {target}; every code in `pairs` needs one
    language_names: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_NAMES))
    candidates: list[str] = field(default_factory=list)  # languages detection chooses among; []: the pairs' languages
    min_confidence: float = 0.5  # lingua confidence: to pick a row's source language, and for the output check
    # per turn, translated / source non-space characters within [min, max], by `source-target` key, else `default`
    # (required); outside: translation_length_ratio
    length_ratio: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_RATIOS.items()})
    min_ratio_chars: int = 12  # turns with fewer source characters skip the ratio check (too noisy)
    batch_size: int = 8  # rows per batched LLM call (each row: one request per turn with letters)
    format: Literal["auto", "jsonl", "json", "parquet"] = "auto"  # input files; auto: by extension (else jsonl)
    uid: UidConfig = field(default_factory=UidConfig)
    shards: ShardConfig = field(default_factory=lambda: ShardConfig(prefix="translated"))
    progress: bool = True  # a progress bar per worker on stderr (rows translated)

    def __post_init__(self) -> None:
        sources = [p[0] for p in self.pairs if len(p) == 2]
        if not self.pairs or len(sources) != len(self.pairs) or any(a == b for a, b in self.pairs):
            raise ConfigError("pairs: a non-empty list of [source, target] ISO 639-1 codes, source != target")
        if len(set(sources)) != len(sources):
            raise ConfigError("pairs: one target per source language (run another recipe for a second target)")
        check_codes([c for p in self.pairs for c in p], "pairs")
        check_codes(self.candidates, "candidates")
        missing = sorted({c for p in self.pairs for c in p} - set(self.language_names))
        if missing:
            raise ConfigError(f"language_names: no name for {', '.join(missing)}")
        keys = _format_keys(self.prompt)
        if "text" not in keys or set(keys) - {"source", "target", "text"}:
            raise ConfigError(f"prompt: a format string over {{source}}, {{target}} and {{text}} (found {keys})")
        for key, bounds in self.length_ratio.items():
            if key != "default" and key.count("-") != 1:
                raise ConfigError(f"length_ratio.{key}: keys are `source-target` (en-zh) or `default`")
            if len(bounds) != 2 or not 0 < bounds[0] < bounds[1]:
                raise ConfigError(f"length_ratio.{key}: [min, max] with 0 < min < max")
        if "default" not in self.length_ratio:
            raise ConfigError("length_ratio.default: required (bounds for pairs without their own)")
        if not 0 <= self.min_confidence <= 1 or self.batch_size < 1 or self.min_ratio_chars < 0:
            raise ConfigError("min_confidence in [0, 1], batch_size >= 1, min_ratio_chars >= 0")

    @property
    def targets(self) -> dict[str, str]:
        return {a: b for a, b in self.pairs}

    @property
    def detect_candidates(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.candidates) | {c for p in self.pairs for c in p}))

    def bounds(self, source: str, target: str) -> tuple[float, float]:
        lo, hi = self.length_ratio.get(f"{source}-{target}", self.length_ratio["default"])
        return lo, hi


@dataclass(slots=True)
class TranslationItem:
    """One input row through the stage: its conversation, the chosen pair, the translated turns
    (None until translated) or the rejection that ended it."""

    uid: str
    source_file: str
    source_row: int
    conversation: Conversation | None = None
    source_language: str | None = None
    source_confidence: float | None = None
    target: str | None = None
    translated: list[str] | None = None
    output_confidence: float | None = None
    requests: int = 0  # turns sent to the LLM
    llm: list[dict[str, Any]] = field(default_factory=list)  # per request: the backend's raw meta
    stage: str = ""
    reason: str | None = None
    detail: str = ""

    def reject(self, stage: str, reason: str, detail: str = "") -> "TranslationItem":
        check_reason(reason)  # a typo must not invent a reason
        self.stage, self.reason, self.detail, self.translated = stage, reason, detail, None
        return self

    @property
    def kept(self) -> bool:
        return self.translated is not None and self.reason is None

    @property
    def order_key(self) -> tuple[str, int]:
        return self.source_file, self.source_row

    @property
    def translated_id(self) -> str | None:
        return f"{self.uid}-{self.target}" if self.target else None

    def row(self) -> dict[str, Any]:
        """The translated conversation row (InternVL jsonl), marked with the uid it came from."""
        conv = self.conversation
        assert conv is not None and self.translated is not None
        out: dict[str, Any] = {"id": self.translated_id, "translated_from": self.uid, "language": self.target}
        if conv.images:
            out["image"] = conv.images[0] if len(conv.images) == 1 else list(conv.images)
        out["conversations"] = [{"from": BACK_ROLES[t.role], "value": v} for t, v in zip(conv.turns, self.translated)]
        return out


def item_of(rec: Conversation | PreferencePair | Rejection) -> TranslationItem:
    """A read record as an item: rejections stay rejected; preference rows and rows carrying image
    bytes are rejected (translate reads and writes conversation jsonl naming image files)."""
    if isinstance(rec, Rejection):
        return TranslationItem(rec.row.uid, rec.row.source_file, rec.row.source_row).reject(rec.stage, rec.reason, rec.detail)
    item = TranslationItem(rec.uid, rec.source_file, rec.source_row)
    if isinstance(rec, PreferencePair):
        return item.reject("read", "malformed_row", "a preference pair, not a conversation row")
    if any(rec.embedded):
        return item.reject("read", "image_bytes_in_row", "stage the images to files first")
    item.conversation = rec
    return item


def _text_of(values: Iterable[str]) -> str:
    return "\n".join(v.replace(IMAGE_PLACEHOLDER, " ") for v in values).strip()


def plan(item: TranslationItem, cfg: TranslateConfig) -> TranslationItem:
    """Detect the row's language from its text turns and pick its pair, or reject the row."""
    if item.reason is not None or item.conversation is None:
        return item
    guess = detect(_text_of(t.value for t in item.conversation.turns), cfg.detect_candidates)
    item.source_language, item.source_confidence = guess.lang, guess.confidence
    target = cfg.targets.get(guess.lang or "")
    if target is None or guess.confidence < cfg.min_confidence:
        seen = f"{guess.lang} ({guess.confidence:.2f})" if guess.lang else "no letters"
        return item.reject("detect", "no_translation_pair",
                           f"detected {seen}; sources {', '.join(sorted(cfg.targets))} at >= {cfg.min_confidence}")
    item.target = target
    return item


def split_edges(value: str) -> tuple[str, str, str]:
    """(leading placeholders and space, the text to translate, trailing placeholders and space)."""
    m = _EDGES.match(value)
    assert m is not None  # every part of the pattern can be empty
    return m.group(1), m.group(2), m.group(3)


def _chars(text: str) -> int:
    return len("".join(text.replace(IMAGE_PLACEHOLDER, "").split()))


def check_turn(source: str, translated: str, bounds: tuple[float, float], min_ratio_chars: int = 12,
               echo_min_chars: int = 4) -> Verdict:
    """One turn's translation: not empty, `<image>` count unchanged, not the source text repeated
    (a source core of at least `echo_min_chars` characters found in it verbatim), length ratio in bounds."""
    if not translated.replace(IMAGE_PLACEHOLDER, "").strip():
        return Verdict.reject("translation_empty", "")
    before, after = source.count(IMAGE_PLACEHOLDER), translated.count(IMAGE_PLACEHOLDER)
    if before != after:
        return Verdict.reject("translation_placeholders", f"{before} <image> in the source, {after} in the translation")
    core = split_edges(source)[1].strip()
    if _needs_llm(core) and _chars(core) >= echo_min_chars and core in translated:
        return Verdict.reject("translation_echo", f"repeats the source {core[:40]!r}")
    n = _chars(source)
    if n >= min_ratio_chars:
        ratio = _chars(translated) / n
        if not bounds[0] <= ratio <= bounds[1]:
            return Verdict.reject("translation_length_ratio", f"{ratio:.2f} outside [{bounds[0]}, {bounds[1]}]")
    return Verdict.keep()


def check_language(text: str, target: str, candidates: Sequence[str], min_confidence: float) -> tuple[Verdict, float]:
    """The translated text detected as `target` with at least `min_confidence` (and that confidence)."""
    guess = detect(text, tuple(candidates))
    confidence = guess.confidence if guess.lang == target else 0.0
    if guess.lang != target or guess.confidence < min_confidence:
        seen = f"{guess.lang} ({guess.confidence:.2f})" if guess.lang else "no letters"
        return Verdict.reject("translation_wrong_language", f"detected {seen}, want {target} >= {min_confidence}"), confidence
    return Verdict.keep(), confidence


def check_translation(sources: Sequence[str], translations: Sequence[str], source: str, target: str,
                      cfg: TranslateConfig) -> tuple[Verdict, float | None]:
    """Every turn's check, then the language of the text that was translated (turns without letters
    are copied and do not count); the first failure is the verdict. Also the output's confidence."""
    bounds = cfg.bounds(source, target)
    # across scripts (en -> zh) any source text left in is wrong; within one, names may stay: whole sentences not
    echo = 4 if script_of_language(source) != script_of_language(target) else cfg.min_ratio_chars
    for k, (src, out) in enumerate(zip(sources, translations)):
        verdict = check_turn(src, out, bounds, cfg.min_ratio_chars, echo)
        if not verdict.ok:
            return Verdict(False, verdict.reason, f"turn {k}: {verdict.detail}".rstrip(": ")), None
    changed = [out for src, out in zip(sources, translations) if _needs_llm(split_edges(src)[1])]
    if not changed:
        return Verdict.keep(), None
    return check_language(_text_of(changed), target, cfg.detect_candidates, cfg.min_confidence)


def _needs_llm(core: str) -> bool:
    return any(ch.isalpha() for ch in core.replace(IMAGE_PLACEHOLDER, ""))


class Translator:
    """Translates planned items with one LLM backend (`curation.annotate.llm.build_backend`): all
    turns of a batch in one `chat` call, greedy or as `llm.sampling` says; checks every output."""

    def __init__(self, cfg: TranslateConfig, backend: Any) -> None:
        self.cfg = cfg
        self.backend = backend
        self.label = f"{backend.name}:{backend.model}"

    def _messages(self, text: str, source: str, target: str) -> list[dict[str, Any]]:
        names = self.cfg.language_names
        user = self.cfg.prompt.format(source=names[source], target=names[target], text=text)
        system = [{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []
        return system + [{"role": "user", "content": user}]

    def translate(self, items: Sequence[TranslationItem]) -> list[TranslationItem]:
        """Each planned item translated and checked (kept or rejected); others pass unchanged."""
        requests: list[tuple[int, int, str, str]] = []  # (item, turn, prefix, suffix)
        conversations = []
        for i, item in enumerate(items):
            if item.reason is not None or item.conversation is None or item.target is None:
                continue
            item.translated = [t.value for t in item.conversation.turns]
            for k, turn in enumerate(item.conversation.turns):
                head, core, tail = split_edges(turn.value)
                if _needs_llm(core):
                    requests.append((i, k, head, tail))
                    conversations.append(self._messages(core, item.source_language or "", item.target))
        answers = self.backend.chat(conversations, self.cfg.llm.sampling) if conversations else []
        failed: dict[int, tuple[str, str]] = {}
        for (i, k, head, tail), answer in zip(requests, answers):
            item = items[i]
            item.requests += 1
            if i in failed:
                continue
            if not hasattr(answer, "text"):  # an LlmError: the backend failed on this request
                failed[i] = (answer.reason, f"turn {k}: {answer.detail}")
                continue
            item.llm.append({"turn": k, **answer.raw})
            if answer.raw.get("finish_reason") == "length":
                failed[i] = ("translation_truncated", f"turn {k}: {self.cfg.llm.sampling.max_new_tokens} new tokens")
                continue
            assert item.translated is not None
            item.translated[k] = head + answer.text + tail
        for i, item in enumerate(items):
            if i in failed:
                item.reject("translate", *failed[i])
            elif item.translated is not None and item.reason is None:
                assert item.conversation is not None and item.target is not None
                verdict, confidence = check_translation([t.value for t in item.conversation.turns], item.translated,
                                                        item.source_language or "", item.target, self.cfg)
                item.output_confidence = confidence
                if not verdict.ok:
                    item.reject("check", verdict.reason or "", verdict.detail)
        return list(items)


# -- the shard: translated jsonl, an audit tar, the manifest ---------------------------------------

def _manifest_row(t: TranslationItem) -> dict[str, Any]:
    return {
        "uid": t.uid, "source_file": t.source_file, "source_row": t.source_row,
        "status": "kept" if t.kept else "rejected", "stage": None if t.kept else t.stage,
        "reason": None if t.kept else t.reason, "detail": None if t.kept else t.detail,
        "translated_id": t.translated_id, "source_language": t.source_language,
        "source_confidence": t.source_confidence, "target_language": t.target,
        "output_confidence": t.output_confidence,
        "turns": None if t.conversation is None else len(t.conversation.turns), "llm_requests": t.requests,
    }


def write_translate_shard(shard: int, name: str, records: Iterable[TranslationItem], tar_file: IO[bytes],
                          manifest_file: IO[bytes]):
    """One shard from all its items (kept and rejected): `{name}.jsonl` (translated rows sorted by
    id, what `curate pack` reads), `{name}.tar` (per kept row `{id}.json`: the row, its source turns
    and the LLM's meta, for audit) and `{name}.parquet` (one manifest row per input row)."""
    from curation.core.manifests import TRANSLATE_MANIFEST
    from curation.core.shards import HashingWriter, ShardReport, rejection_counts, write_rows, write_tar

    def dup(item: TranslationItem, first: TranslationItem) -> TranslationItem:
        return item.reject("write", "dup_uid", f"uid already kept from {first.source_file}:{first.source_row}")

    items = first_kept_per_uid(records, order_key=lambda t: t.order_key, uid=lambda t: t.uid, kept=lambda t: t.kept,
                               dup=dup)
    kept = sorted((t for t in items if t.kept), key=lambda t: t.translated_id or "")
    lines, members = [], []
    for item in kept:
        row = item.row()
        lines.append(json.dumps(row, ensure_ascii=False, sort_keys=True))
        assert item.conversation is not None
        audit = {"row": row, "source_language": item.source_language, "source_confidence": item.source_confidence,
                 "output_confidence": item.output_confidence, "source_turns": [t.value for t in item.conversation.turns],
                 "llm": item.llm}
        members.append((f"{item.translated_id}.json", json.dumps(audit, ensure_ascii=False, sort_keys=True).encode()))
    tar_out = HashingWriter(tar_file)
    write_tar(tar_out, members)
    man_out = HashingWriter(manifest_file)
    write_rows([_manifest_row(t) for t in items], TRANSLATE_MANIFEST, man_out)
    rejected = [t for t in items if not t.kept]
    targets = Counter(f"translated_{t.source_language}_{t.target}" for t in kept)
    report = ShardReport(
        shard=shard, name=name, kept=len(kept), rows=len(items), tar_sha256=tar_out.hexdigest(),
        manifest_sha256=man_out.hexdigest(), tar_bytes=tar_out.size, **rejection_counts(rejected),
        stats={"llm_requests": sum(t.requests for t in items), **dict(sorted(targets.items()))})
    return report, {f"{name}.jsonl": "".join(line + "\n" for line in lines).encode()}
