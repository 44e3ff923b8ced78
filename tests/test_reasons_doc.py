"""docs/reasons.md is generated from curation/core/reasons.py: it must be the current one, and name
every code exactly once."""

import re
from pathlib import Path

from curation.core.reasons import REASONS, reasons_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "reasons.md"


def test_the_reasons_page_is_generated_from_the_closed_set():
    assert DOC.read_text(encoding="utf-8") == reasons_markdown(), \
        "docs/reasons.md is stale: python -m curation.core.reasons > docs/reasons.md"
    codes = re.findall(r"^\| `([a-z0-9_]+)` \|", DOC.read_text(encoding="utf-8"), re.M)
    assert sorted(codes) == sorted(REASONS) and len(codes) == len(set(codes))


def test_the_end_of_run_report_names_the_recipe_key_behind_a_reason():
    import io

    from curation.cli.reports import print_ingest_report
    from curation.core.reasons import REASON_HINTS

    assert set(REASON_HINTS) <= set(REASONS)
    out = io.StringIO()
    index = {"num_shards": 1, "totals": {"inputs": 5, "kept": 1}, "reasons": {"private_address": 3, "http_404": 1}}
    print_ingest_report(index, "out", stream=out)
    text = out.getvalue()
    assert "hint: private_address: ingest recipe download.allow_private_addresses: true" in text
    assert "hint: http_404" not in text  # nothing in a recipe decides a 404


def test_a_private_address_rejection_says_which_key_allows_it():
    from curation.ingest.config import DownloadConfig
    from curation.ingest.fetch import Fetcher

    result = Fetcher(DownloadConfig(timeout_s=2.0, retries=0)).fetch("http://127.0.0.1:9/x.jpg")
    assert result.reason == "private_address" and "download.allow_private_addresses" in result.detail
