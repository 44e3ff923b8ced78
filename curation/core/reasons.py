"""The closed set of rejection reason codes, one place, documented.

Every rejected row carries one of these codes; `inputs == kept + sum(rejected by reason)` is
checked against this set. HTTP status codes map onto a fixed list (see `http_reason`).
"""

from __future__ import annotations

REASONS: dict[str, str] = {
    # read / parse
    "malformed_row": "the metadata row could not be parsed (bad JSON line, wrong types)",
    "unreadable_file": "the metadata file stops being readable here (corrupt footer, bad compression)",
    "missing_url": "the row has no URL or local image path",
    "dup_uid": "another input row already has this uid (kept: the first in source order; in dedup, its best representative)",
    "subsampled": "left out by its meta dataset's repeat_time below 1 (a seeded share of the rows is kept)",
    # metadata filters
    "empty_caption": "caption is empty or whitespace",
    "placeholder_caption": "caption is a placeholder or a file name, not a description",
    "caption_too_short": "caption below min_chars or min_words",
    "caption_too_long": "caption above max_chars or max_words",
    "declared_too_small": "declared width/height below min_side",
    "declared_too_large": "declared area above max_area",
    "declared_bad_aspect": "declared aspect ratio above max_aspect",
    "nsfw": "NSFW tag or score above threshold",
    "watermark": "watermark score above threshold",
    "low_clip_similarity": "CLIP image-text similarity below threshold",
    "eval_contaminated": "a long n-gram of an eval set's question, answer or option (or a whole short one), or an image within phash_bits of an eval image",
    "language_not_kept": "caption confidently in a language outside the recipe's `language.keep` list",
    # dedup (detail ends with the kept representative's uid: highest quality score, then smallest uid)
    "dup_url": "exact duplicate of another row's normalised URL",
    "dup_caption": "same caption as another row after normalisation (case, punctuation, spacing)",
    "dup_image": "same image bytes (sha256) as another row",
    "near_dup_caption": "caption near-duplicate (MinHash LSH, Jaccard >= threshold) of another row",
    "near_dup_image": "image near-duplicate (pHash within the Hamming radius) of another row",
    "semantic_dup_caption": "caption embedding within semantic_caption.threshold cosine of another row's (SemDeDup)",
    "semantic_dup_image": "CLIP image embedding within semantic_image.threshold cosine of another row's (SemDeDup)",
    # download
    "invalid_url": "URL cannot be parsed or has no host",
    "unsupported_scheme": "scheme other than http/https (file://, ftp://, data:)",
    "private_address": "host resolves to a private, loopback, link-local or metadata address",
    "dns_error": "host name does not resolve",
    "connection_error": "connection refused or reset",
    "timeout": "no complete response within timeout_s",
    "too_many_redirects": "more than max_redirects redirects",
    "redirect_loop": "a redirect points back to an URL already visited",
    "http_400": "HTTP 400",
    "http_401": "HTTP 401",
    "http_403": "HTTP 403",
    "http_404": "HTTP 404",
    "http_410": "HTTP 410",
    "http_429": "HTTP 429 after retries",
    "http_4xx": "another HTTP 4xx status",
    "http_500": "HTTP 500 after retries",
    "http_502": "HTTP 502 after retries",
    "http_503": "HTTP 503 after retries",
    "http_504": "HTTP 504 after retries",
    "http_5xx": "another HTTP 5xx status (or an unexpected 1xx/3xx)",
    "robots_noai": "X-Robots-Tag opts out (noai, noimageai, noindex, noimageindex)",
    "robots_disallowed": "the host's robots.txt disallows the URL for our user agent token (or answered 5xx: RFC 9309)",
    "tdm_reserved": "the response reserves text and data mining rights (TDM-Rep header tdm-reservation: 1)",
    "host_unreachable": "the host failed host_failures connections in a row on this worker: its other URLs fail fast",
    "hash_mismatch": "the downloaded bytes' sha256 differs from the source's (the image changed since the crawl)",
    "body_too_large": "response body above max_bytes",
    "empty_body": "zero-byte response",
    "not_an_image": "content type is not an image (HTML, JSON, text)",
    "local_file_error": "a local image path is missing, unreadable or outside image_root",
    "file_too_large": "a local image file above images.max_bytes",
    # image
    "decode_error": "Pillow cannot identify or decode the bytes",
    "truncated_image": "image data ends early",
    "decompression_bomb": "pixel count above the decompression-bomb limit",
    "too_small": "decoded min side below the pixel filter",
    "too_large": "decoded area above the pixel filter",
    "bad_aspect_ratio": "decoded aspect ratio above the pixel filter",
    "blank_image": "uniform or near-uniform pixels (blank, solid colour, empty transparency)",
    "nsfw_pixels": "Open-NSFW's score on the downloaded pixels above pixels.nsfw.max_score (only once its gate is earned)",
    "too_many_faces": "more faces (detected, plus the row's face boxes) than pixels.faces.max_faces",
    "low_clip_pixel_similarity": "the CLIP / SigLIP cosine of the stored image and its caption below pixels.clip.min_similarity (only once its gate is earned)",
    "low_aesthetic": "LAION's aesthetic predictor on the stored image below pixels.clip.aesthetic.min_score",
    "pixel_score_error": "the CLIP step could not score this image (its error in the detail; the rest of its batch went on)",
    "encode_error": "re-encoding the image failed",
    # video (curation/ingest/video.py)
    "not_a_video": "no container FFmpeg (PyAV) can read, or no video stream in it",
    "audio_only": "the container holds audio and no video stream",
    "video_corrupt": "the video stream breaks before any frame decodes",
    "video_no_frames": "the video decodes to no usable frame",
    "video_too_long": "the video's duration is above video.max_duration_s",
    "video_too_large": "the video's frames are above video.max_pixels",
    "phash_mismatch": "the image's pHash is farther than phash_tolerance bits from the source's (a different image)",
    "internal_error": "an unexpected exception while downloading or decoding this row (its type in the detail); the run went on",
    # annotate (OCR, heuristic rules, LLM quality scoring)
    "ocr_error": "the OCR engine failed on this image (the rest of its batch went on)",
    "abnormal_sentence_length": "caption sentences too long, or their mean word count outside the configured range",
    "long_number_run": "a long run of zeros or digits in the caption",
    "duplicate_lines": "too many caption lines repeat an earlier line",
    "repetitive_ngrams": "an n-gram (InternVL's 10-gram rule) repeats more often than allowed",
    "repetitive_words": "word n-grams repeat (Data-Juicer word repetition ratio above the threshold)",
    "repetitive_chars": "character n-grams repeat (Data-Juicer character repetition ratio above the threshold)",
    "low_compression_ratio": "the text compresses far more than natural text does (repetition, boilerplate)",
    "low_quality_score": "the LLM's domain-specific 0-9 quality score is below the threshold",
    "repetitive_text": "the LLM's 0-9 repetition score is below the threshold",
    "llm_unparseable": "no score digit carries probability mass (or, from a server without logprobs, the answer holds no 0-9 score)",
    "llm_error": "the LLM backend failed on this sample (server error, timeout, engine error)",
    # mmpr (preference pairs)
    "no_parseable_answer": "no sampled response has a final answer to check",
    "all_correct": "every sampled response is right (nothing to reject)",
    "all_wrong": "no sampled response is right (nothing to choose)",
    "ambiguous_answer": "the responses that are not right are near misses (a digit, a few days, one character or word "
                        "off): too close to reject, so no correctness pair",
    "empty_response": "the policy returned empty responses (or an empty continuation)",
    "identical_pair": "the rejected response came out identical to the chosen one",
    "no_applicable_method": "neither pair method applies to the row (no answer_gt while dropout_ntp is off or no_gt only)",
    # pack
    "placeholder_mismatch": "the number of <image> placeholders differs from the number of images",
    "no_supervised_tokens": "nothing to learn from: no assistant or pretrain text (or none left after truncation)",
    "too_long": "pack: above l_max tokens even after text-only truncation (never cut inside an image); "
                "mmpr: every sampled response hit max_new_tokens",
    "too_many_tiles": "the sample's images need more than t_max tiles",
    # translate (`curate translate`: conversations into another language, each output checked)
    "no_translation_pair": "translate: the row's detected language is the source of no recipe pair (or detected below min_confidence)",
    "image_bytes_in_row": "translate: the row carries an image as bytes (HF parquet); translated jsonl names image files",
    "translation_empty": "translate: a turn's translation came back empty",
    "translation_truncated": "translate: the LLM stopped at max_new_tokens inside a turn's translation",
    "translation_wrong_language": "translate: the translation is not detected as the target language with min_confidence",
    "translation_length_ratio": "translate: a turn's translated / source length is outside the pair's bounds",
    "translation_placeholders": "translate: a turn's <image> placeholder count changed in translation",
    "translation_echo": "translate: the translation repeats the source text verbatim (across scripts: any 4+ characters of a turn)",
    # plan (metadata-only dry run)
    "no_declared_size": "plan: the row declares no image width/height, so its tiles cannot be planned",
}

# The recipe key that decides a rejection, for the end-of-run report's hints: what to change when
# a reason is not what the run should have said (a local test server refused as private, say).
REASON_HINTS: dict[str, str] = {
    "private_address": "ingest recipe download.allow_private_addresses: true fetches from private, loopback and "
                       "link-local addresses (a local server)",
    "body_too_large": "ingest recipe download.max_bytes caps one response",
    "not_an_image": "ingest recipe download.check_content_type: false accepts any content type that decodes",
    "timeout": "ingest recipe download.timeout_s (one attempt) and download.deadline_s (all attempts of a URL)",
    "host_unreachable": "ingest recipe download.host_failures: connection failures in a row before a host is given up",
    "robots_noai": "ingest recipe download.disallowed_robots: the X-Robots-Tag values honoured",
    "hash_mismatch": "ingest recipe download.verify_sha256 checks the source's own hash of the bytes",
    "phash_mismatch": "ingest recipe download.phash_tolerance: bits a source's pHash may differ",
    "low_quality_score": "annotate recipe quality.threshold (null: chosen from the probe ROC)",
    "repetitive_text": "annotate recipe quality.repetition_threshold (null: chosen from the probe ROC)",
}

HTTP_CODES_NAMED = frozenset({400, 401, 403, 404, 410, 429, 500, 502, 503, 504})


def http_reason(status: int) -> str:
    """Map an HTTP status to its reason code."""
    if status in HTTP_CODES_NAMED:
        return f"http_{status}"
    if 400 <= status < 500:
        return "http_4xx"
    return "http_5xx"


def check_reason(code: str) -> str:
    """Return `code` if it is in the closed set, else raise: a typo must not invent a reason."""
    if code not in REASONS:
        raise ValueError(f"unknown rejection reason {code!r}; add it to curation/core/reasons.py")
    return code


def reasons_markdown() -> str:
    """docs/reasons.md: every code with its meaning, grouped as REASONS' comments group them
    (`python -m curation.core.reasons > docs/reasons.md`; tests/test_reasons_doc.py keeps it current)."""
    import inspect
    import re

    lines = ["# Rejection reasons", "",
             "Every rejected row carries one of these codes (`curation/core/reasons.py`; this page is generated",
             "from it by `python -m curation.core.reasons > docs/reasons.md`). `inputs == kept + rejected` is",
             "checked per shard and per stage against this closed set.", ""]
    source = inspect.getsource(inspect.getmodule(reasons_markdown))
    body = source[source.index("REASONS: dict[str, str] = {"):source.index("\n}\n")]
    for raw in body.splitlines()[1:]:
        heading = re.match(r"\s*# (.+)", raw)
        code = re.match(r'\s*"([a-z0-9_]+)":', raw)
        if heading:
            lines += ["", f"## {heading.group(1)[0].upper()}{heading.group(1)[1:]}", "", "| code | meaning |", "| --- | --- |"]
        elif code:
            lines.append(f"| `{code.group(1)}` | {REASONS[code.group(1)].replace('|', '/')} |")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


if __name__ == "__main__":
    print(reasons_markdown(), end="")
