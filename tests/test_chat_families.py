"""Token ids and labels per LLM family, against a reimplementation of InternVL's
`preprocess_internvl2_5` (internvl_chat/internvl/train/dataset.py): InternLM2 (InternVL 2.5 8B /
26B: a BOS first, read from `add_bos_token`) and Qwen2 / 2.5 (ChatML, no BOS).

The tokenizers are built here, offline, with `tokenizers` (byte-level BPE trained on a few lines,
each family's special tokens, InternLM2's post-processor adding `<s>`): no hub, no weights. What
is under test is the template and the BOS, not the vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from curation.core.conversations import Turn
from packing.tiling import TOKENS_PER_TILE
from packing.tokens import IGNORE_INDEX, INTERNVL_SYSTEM, ChatEncoder, wants_bos

CORPUS = ["The first is red. Blue. Compare them. Describe this image in one sentence.", INTERNVL_SYSTEM,
          "user assistant system 多模态 大语言模型 图中有一只猫。 A red bus waits by the bakery."] * 30
IMAGE = ["<img>", "</img>", "<IMG_CONTEXT>"]


def _tokenizer(family: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = {"internlm2": ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"],
               "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]}[family] + IMAGE
    tok = Tokenizer(models.BPE(unk_token="<unk>" if family == "internlm2" else None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=700, special_tokens=special,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if family == "internlm2":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                       pad_token="</s>", add_bos_token=True)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def internvl_preprocess_internvl2_5(tokenizer, conversations: list[dict], num_image_tokens: list[int],
                                    system_prompt: str | None = INTERNVL_SYSTEM) -> tuple[list[int], list[int]]:
    """InternVL's preprocess_internvl2_5, reimplemented: one batch item per turn, `<image>` expanded
    in human turns, the BOS text put before the first item and every item's own BOS cut off,
    `<|im_start|>assistant\\n` and the trailing `\\n` of assistant turns masked."""
    k = 0
    batches, roles = [], []
    if system_prompt is not None:
        batches.append(f"<|im_start|>system\n{system_prompt}<|im_end|>\n")
        roles.append("system")
    for c in conversations:
        value = c["value"]
        if c["from"] == "human":
            while "<image>" in value:
                value = value.replace("<image>", "<img>" + "<IMG_CONTEXT>" * num_image_tokens[k] + "</img>", 1)
                k += 1
            batches.append(f"<|im_start|>user\n{value}<|im_end|>\n")
        else:
            batches.append(f"<|im_start|>assistant\n{value}<|im_end|>\n")
        roles.append(c["from"])
    add_bos = getattr(tokenizer, "add_bos_token", False)
    if add_bos:
        batches[0] = tokenizer.bos_token + batches[0]
    input_ids = [np.asarray(ids) for ids in tokenizer(batches)["input_ids"]]
    if add_bos:
        input_ids = [ids[1:] for ids in input_ids]
    ignore_len = len(tokenizer("<|im_start|>assistant\n")["input_ids"]) - (1 if add_bos else 0)
    targets = []
    for role, ids in zip(roles, input_ids):
        if role in ("system", "human"):
            targets.append(np.full(ids.shape, IGNORE_INDEX))
        else:
            t = ids.copy()
            t[:ignore_len] = IGNORE_INDEX
            t[-1:] = IGNORE_INDEX
            targets.append(t)
    return np.concatenate(input_ids).tolist(), np.concatenate(targets).tolist()


CONVERSATIONS = [
    ([{"from": "human", "value": "<image>\nDescribe this image in one sentence."},
      {"from": "gpt", "value": "A red bus waits by the bakery."}], [1]),
    ([{"from": "human", "value": "Image-1: <image>\nImage-2: <image>\nCompare them."},
      {"from": "gpt", "value": "The first is red."}, {"from": "human", "value": "And the second?"},
      {"from": "gpt", "value": "Blue."}], [5, 1]),
    ([{"from": "human", "value": "图中有什么？"}, {"from": "gpt", "value": "图中有一只猫。"}], []),
]


@pytest.mark.parametrize("family", ["internlm2", "qwen2"])
@pytest.mark.parametrize("conversation, tiles", CONVERSATIONS)
def test_ids_and_labels_match_internvl_per_family(family, conversation, tiles):
    tokenizer = _tokenizer(family)
    assert wants_bos(tokenizer) is (family == "internlm2")
    turns = [Turn("user" if c["from"] == "human" else "assistant", c["value"]) for c in conversation]
    enc = ChatEncoder(tokenizer).encode(turns, tiles)
    ids, labels = internvl_preprocess_internvl2_5(tokenizer, [dict(c) for c in conversation],
                                                  [TOKENS_PER_TILE * t for t in tiles])
    assert enc.input_ids.tolist() == ids and enc.labels.tolist() == labels
    if family == "internlm2":
        assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id  # one BOS, first
        assert ids.count(tokenizer.bos_token_id) == 1


def test_a_saved_internlm2_tokenizer_that_lost_its_flag_still_gets_its_bos(tmp_path):
    """save_pretrained drops `add_bos_token` from a plain fast tokenizer; its encoding still starts
    with `<s>`, and that is what the encoder reads."""
    from transformers import AutoTokenizer

    _tokenizer("internlm2").save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert not getattr(loaded, "add_bos_token", False) and wants_bos(loaded)
    enc = ChatEncoder(loaded).encode([Turn("user", "Blue."), Turn("assistant", "Red.")], [])
    assert enc.input_ids[0] == loaded.bos_token_id and enc.labels[0] == IGNORE_INDEX
    assert ChatEncoder(loaded, bos=False).encode([Turn("user", "Blue.")], []).input_ids[0] != loaded.bos_token_id
    pretrain = ChatEncoder(loaded).encode([Turn("pretrain", "A red bus.")], [])
    assert pretrain.input_ids.tolist() == loaded("A red bus.")["input_ids"] == pretrain.labels.tolist()
