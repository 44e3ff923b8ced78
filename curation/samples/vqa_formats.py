"""Small files in the shapes VQA benchmarks ship, for `curate mmpr`'s readers: Hugging Face parquet
with image structs (ScienceQA, A-OKVQA, ChartQA, DocVQA; column names and types as in
derek-thomas/ScienceQA, HuggingFaceM4/A-OKVQA, HuggingFaceM4/ChartQA, lmms-lab/DocVQA) and
MathVista's jsonl with image paths (AI4Math/MathVista testmini). Written here from rendered sign
images; `EXPECTED` says what each row must become."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curation.samples.text_images import text_images

# file -> per row: (answer_type, answer_gt, options, images) or a rejection reason
EXPECTED: dict[str, list[tuple[str, Any, int, int] | str]] = {
    "scienceqa.parquet": [("multiple_choice", "B", 3, 1), ("multiple_choice", "A", 2, 0), "malformed_row"],
    "aokvqa.parquet": [("multiple_choice", "C", 4, 1), ("multiple_choice", "A", 4, 1)],
    "chartqa.parquet": [("relaxed", ("42",), 0, 1), ("relaxed", ("Yes",), 0, 1)],
    "docvqa.parquet": [("anls", ("FROZEN", "frozen foods"), 0, 1), ("anls", ("1977",), 0, 1)],
    "mathvista.jsonl": [("number", "3", 0, 1), ("multiple_choice", "B", 4, 1), ("number", "1.5", 0, 1), "malformed_row",
                        "local_file_error"],
}


def _struct(data: bytes, name: str) -> dict[str, Any]:
    return {"bytes": data, "path": name}


def _write_parquet(path: Path, rows: list[dict[str, Any]], schema) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=2)


def write_vqa_formats(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write one file per benchmark shape under `out_dir` (MathVista's images under `images/`);
    returns file name -> path."""
    import pyarrow as pa

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    signs = text_images(10, seed)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    paths: dict[str, Path] = {}

    sqa = pa.schema([("image", image), ("question", pa.string()), ("choices", pa.list_(pa.string())),
                     ("answer", pa.int8()), ("hint", pa.string()), ("task", pa.string()), ("subject", pa.string()),
                     ("lecture", pa.string()), ("solution", pa.string())])
    paths["scienceqa.parquet"] = out / "scienceqa.parquet"
    _write_parquet(paths["scienceqa.parquet"], [
        {"image": _struct(signs[0].data, "0.png"), "question": "Which word is written on the sign?",
         "choices": ["apple", " ".join(signs[0].lines), "river"], "answer": 1, "hint": "Read the sign.",
         "task": "closed choice", "subject": "language science", "lecture": "", "solution": "The sign says it."},
        {"image": None, "question": "Which is a mammal?", "choices": ["whale", "shark"], "answer": 0, "hint": "",
         "task": "closed choice", "subject": "natural science", "lecture": "Mammals feed milk.", "solution": ""},
        {"image": None, "question": "Which is a gas?", "choices": ["ice", "steam"], "answer": 5, "hint": "",
         "task": "closed choice", "subject": "natural science", "lecture": "", "solution": ""},  # index past the choices
    ], sqa)

    aok = pa.schema([("image", image), ("question_id", pa.string()), ("question", pa.string()),
                     ("choices", pa.list_(pa.string())), ("correct_choice_idx", pa.int8()),
                     ("direct_answers", pa.list_(pa.string())), ("difficult_direct_answer", pa.bool_()),
                     ("rationales", pa.list_(pa.string()))])
    paths["aokvqa.parquet"] = out / "aokvqa.parquet"
    _write_parquet(paths["aokvqa.parquet"], [
        {"image": _struct(signs[1].data, "000000001.jpg"), "question_id": "22MexNkBPpdZGX6sxbxVBH",
         "question": "What is the sign for?", "choices": ["eating", "sleeping", "reading", "swimming"],
         "correct_choice_idx": 2, "direct_answers": ["reading"] * 6 + ["read"] * 4, "difficult_direct_answer": False,
         "rationales": ["There are words on it."]},
        {"image": _struct(signs[2].data, "000000002.jpg"), "question_id": "2AanW5vmrTWgeZtDzDmNMR",
         "question": "What shape is the sign?", "choices": ["rectangle", "circle", "star", "heart"],
         "correct_choice_idx": 0, "direct_answers": ["rectangle"] * 8 + ["square"] * 2, "difficult_direct_answer": False,
         "rationales": ["Signs are rectangles."]},
    ], aok)

    chart = pa.schema([("image", image), ("query", pa.string()), ("label", pa.list_(pa.string())),
                       ("human_or_machine", pa.int64())])
    paths["chartqa.parquet"] = out / "chartqa.parquet"
    _write_parquet(paths["chartqa.parquet"], [
        {"image": _struct(signs[3].data, None), "query": "What is the value of the tallest bar?", "label": ["42"],
         "human_or_machine": 0},
        {"image": _struct(signs[4].data, None), "query": "Is the line going up?", "label": ["Yes"], "human_or_machine": 1},
    ], chart)

    doc = pa.schema([("questionId", pa.string()), ("question", pa.string()), ("question_types", pa.list_(pa.string())),
                     ("image", image), ("docId", pa.int64()), ("ucsf_document_id", pa.string()),
                     ("ucsf_document_page_no", pa.string()), ("answers", pa.list_(pa.string())), ("data_split", pa.string())])
    paths["docvqa.parquet"] = out / "docvqa.parquet"
    _write_parquet(paths["docvqa.parquet"], [
        {"questionId": "52212", "question": "What kind of foods are listed?", "question_types": ["free_text"],
         "image": _struct(signs[5].data, None), "docId": 1968, "ucsf_document_id": "mxcj0037", "ucsf_document_page_no": "1",
         "answers": ["FROZEN", "frozen foods"], "data_split": "val"},
        {"questionId": "52213", "question": "What year is on the form?", "question_types": ["form"],
         "image": _struct(signs[6].data, None), "docId": 1969, "ucsf_document_id": "mxcj0038", "ucsf_document_page_no": "2",
         "answers": ["1977"], "data_split": "val"},
    ], doc)

    for k in (7, 8):
        (out / "images" / f"{k}.png").write_bytes(signs[k].data)
    meta = {"category": "math-targeted-vqa", "context": "synthetic scene", "grade": "elementary school",
            "img_height": 64, "img_width": 96, "language": "english", "skills": ["arithmetic reasoning"],
            "source": "CLEVR-Math", "split": "testmini", "task": "math word problem"}
    mathvista = [
        {"pid": "1", "question": "How many objects are left after taking two away?", "image": "images/7.png",
         "choices": None, "unit": None, "precision": None, "answer": "3", "question_type": "free_form",
         "answer_type": "integer", "metadata": meta, "query": "Hint: ... Question: How many objects are left?"},
        {"pid": "2", "question": "Which word is on the sign?", "image": "images/8.png",
         "choices": ["cat", " ".join(signs[8].lines), "dog", "sun"], "unit": None, "precision": None,
         "answer": " ".join(signs[8].lines), "question_type": "multi_choice", "answer_type": "text", "metadata": meta,
         "query": "Hint: ... Choices: ..."},
        {"pid": "3", "question": "How long is the stick?", "image": "images/7.png", "choices": None, "unit": "cm",
         "precision": 1.0, "answer": "1.5", "question_type": "free_form", "answer_type": "float", "metadata": meta,
         "query": "Hint: ... Question: How long is the stick?"},
        {"pid": "4", "question": "Which colour?", "image": "images/8.png", "choices": ["red", "blue"], "unit": None,
         "precision": None, "answer": "green", "question_type": "multi_choice", "answer_type": "text",
         "metadata": meta, "query": "..."},  # the answer is none of the choices
        {"pid": "5", "question": "What is shown?", "image": "images/missing.png", "choices": None, "unit": None,
         "precision": None, "answer": "x", "question_type": "free_form", "answer_type": "text", "metadata": meta,
         "query": "..."},
    ]
    paths["mathvista.jsonl"] = out / "mathvista.jsonl"
    paths["mathvista.jsonl"].write_text("".join(json.dumps(r) + "\n" for r in mathvista), encoding="utf-8")
    return paths


def check_formats(output: str | Path, paths: dict[str, Path]) -> list[str]:
    """Problems with an MMPR output's rows from these files: each row rejected with its expected
    reason, or past the read step with its benchmark's answer type."""
    import pyarrow.parquet as pq

    out = Path(output)
    index = json.loads((out / "_index.json").read_text())
    rows = {(r["source_file"], r["source_row"]): r for s in index["shards"]
            for r in pq.read_table(out / s["manifest"]).to_pylist()}
    problems = []
    for name in paths:
        for k, want in enumerate(EXPECTED[name]):
            row = rows.get((name, k))
            if row is None:
                problems.append(f"{name}:{k}: no manifest row")
            elif isinstance(want, str) and row["reason"] != want:
                problems.append(f"{name}:{k}: {row['status']} {row['reason']}, expected {want}")
            elif not isinstance(want, str) and (row["stage"] == "read" or row["answer_type"] != want[0]):
                problems.append(f"{name}:{k}: {row['reason']} ({row['detail']}), answer type {row['answer_type']}")
    return problems
