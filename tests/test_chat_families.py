"""Token ids and labels per LLM family, against reimplementations of InternVL's preprocess functions
(internvl_chat/internvl/train/dataset.py):

- `preprocess_internvl2_5` (InternVL 2.5 / 3): InternLM2 (8B / 26B: a BOS first, read from
  `add_bos_token`) and Qwen2 / 2.5 (ChatML, no BOS);
- `preprocess_internlm` (template internlm2-chat): InternVL2-Llama3-76B (Hermes-2-Theta-Llama-3:
  Llama 3's `<|begin_of_text|>` BOS, ChatML tokens) and InternLM2 (InternVL 1.5 / 2.0);
- `preprocess_phi3` (template phi3-chat): Phi-3-mini (InternVL2-4B);
- `preprocess_mpt` (template Hermes-2): InternVL2-40B's ChatML without a BOS.

The tokenizers are built here, offline, with `tokenizers` (BPE trained on a few lines: byte-level
for InternLM2, Qwen2 and Llama 3, sentencepiece-style Metaspace for Phi-3; each family's special
tokens and chat template; post-processors adding the BOS where the family has one): no hub, no
weights. What is under test is the template, the BOS and the labels, not the vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from curation.core.conversations import Turn
from packing.tiling import TOKENS_PER_TILE
from curation.core.config import ConfigError
from packing.templates import INTERNVL2_SYSTEM, INTERNVL_SYSTEM
from packing.tokens import IGNORE_INDEX, ChatEncoder, wants_bos

CORPUS = ["The first is red. Blue. Compare them. Describe this image in one sentence.", INTERNVL_SYSTEM, INTERNVL2_SYSTEM,
          "user assistant system 多模态 大语言模型 图中有一只猫。 A red bus waits by the bakery.",
          "Image-1: Image-2: And the second? 图中有什么？"] * 30
IMAGE = ["<img>", "</img>", "<IMG_CONTEXT>"]


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
PHI3 = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
FAMILIES = {  # special tokens, BOS (added by the post-processor), EOS, pad, chat template
    "internlm2": (["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"], "<s>", "</s>", "</s>", CHATML),
    "qwen2": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", "<|endoftext|>", CHATML),
    "llama3": (["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"], "<|begin_of_text|>",
               "<|im_end|>", "<|end_of_text|>", CHATML),
    "phi3": (["<unk>", "<s>", "</s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], "<s>",
             "<|endoftext|>", "<|endoftext|>", PHI3),
}


def _tokenizer(family: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special, bos, eos, pad, chat = FAMILIES[family]
    unk = "<unk>" if "<unk>" in special else None
    tok = Tokenizer(models.BPE(unk_token=unk))
    if family == "phi3":  # sentencepiece-style: spaces are ▁, the first word gets one too
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
        tok.decoder = decoders.Metaspace(prepend_scheme="first")
        alphabet = sorted(set("".join(CORPUS)) | {"▁", "\n"})
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=700, special_tokens=special + IMAGE,
                                                        initial_alphabet=alphabet))
    kw = {}
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
        kw = {"bos_token": bos, **({"add_bos_token": True} if family in ("internlm2", "phi3") else {})}
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad, chat_template=chat,
                                   **({"unk_token": unk} if unk else {}), **kw)


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


# -- InternVL 1.5 / 2.0 templates: the conversation tokenized whole, labels by turn lengths

MPT_FORMS = {  # template -> (system header, user header, assistant header, end of turn)
    "internlm2-chat": ("<|im_start|>system\n", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>"),
    "Hermes-2": ("<|im_start|>system\n", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>"),
    "phi3-chat": ("<|system|>\n", "<|user|>\n", "<|assistant|>\n", "<|end|>"),
}


def _mpt_prompt(template: str, conversations: list[dict], num_image_tokens: list[int]) -> str:
    """conversation.py's get_prompt for SeparatorStyle.MPT (system + sep, then role + message + sep
    per turn), values stripped for internlm2-chat, then each `<image>` expanded in order."""
    system, user, assistant, sep = MPT_FORMS[template]
    ret = system + INTERNVL2_SYSTEM + sep
    for c in conversations:
        value = c["value"].strip() if template == "internlm2-chat" else c["value"]
        ret += (user if c["from"] == "human" else assistant) + value + sep
    for n in num_image_tokens:
        ret = ret.replace("<image>", "<img>" + "<IMG_CONTEXT>" * n + "</img>", 1)
    return ret


def _re_turns(conversation: str, sep: str) -> list[str]:
    turns = conversation.split(sep)
    return [sep.join(turns[:3])] + [sep.join(turns[i:i + 2]) for i in range(3, len(turns), 2)]


def internvl_preprocess_mpt(tokenizer, conversation: str) -> tuple[list[int], list[int]]:
    """preprocess_mpt (Hermes-2): no BOS; each re-turn's length + 1 for its end of turn."""
    _, _, assistant, end = MPT_FORMS["Hermes-2"]
    ids = tokenizer(conversation)["input_ids"]
    target = list(ids)
    cur = 0
    for turn in _re_turns(conversation, end):
        if turn == "":
            break
        turn_len = len(tokenizer(turn)["input_ids"]) + 1
        parts = turn.split(end + assistant)
        if len(parts) != 2:
            break
        target[cur:cur + len(tokenizer(parts[0] + end + assistant)["input_ids"])] = \
            [IGNORE_INDEX] * len(tokenizer(parts[0] + end + assistant)["input_ids"])
        cur += turn_len
    target[cur:] = [IGNORE_INDEX] * (len(target) - cur)
    assert cur == len(ids), "tokenization mismatch (InternVL would mask the whole sample)"
    return ids, target


def internvl_preprocess_internlm(tokenizer, conversation: str) -> tuple[list[int], list[int]]:
    """preprocess_internlm (internlm2-chat): the BOS masked, everything up to each assistant header
    masked, each fragment's length less its own BOS."""
    _, user, assistant, _ = MPT_FORMS["internlm2-chat"]
    ids = tokenizer(conversation)["input_ids"]
    target = list(ids)

    def n(text: str) -> int:
        return len(tokenizer(text)["input_ids"]) - 1

    def mask(a: int, b: int) -> None:
        target[a:b] = [IGNORE_INDEX] * (b - a)

    parts = conversation.split(assistant)
    mask(0, 1)
    cur = 1 + n(parts[0] + assistant)
    mask(1, cur)
    for info in parts[1:-1]:
        answer, question = info.split(user)
        cur += n(answer)
        step = n(user + question + assistant)
        mask(cur, cur + step)
        cur += step
    cur += n(parts[-1])
    mask(cur, len(target))
    assert cur == len(ids), "tokenization mismatch (InternVL would mask the whole sample)"
    return ids, target


def internvl_preprocess_phi3(tokenizer, conversation: str) -> tuple[list[int], list[int]]:
    """preprocess_phi3. InternVL hard-codes `- 2` / `- 1` for the later turns: the tokens a fragment
    that starts with a special token gets on its own (the BOS, and the lone dummy-prefix `▁` of the
    slow sentencepiece tokenizer it trains Phi-3 with). Here that count is measured on the tokenizer
    under test, so the arithmetic is InternVL's and its own mismatch check holds."""
    _, _, assistant, end = MPT_FORMS["phi3-chat"]
    lead = len(tokenizer("<|user|>")["input_ids"])  # InternVL's tokenizer: 3 (<s>, ▁, <|user|>); its -2 is lead - 1
    ids = tokenizer(conversation)["input_ids"]
    target = list(ids)
    target[0] = IGNORE_INDEX
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    target = [IGNORE_INDEX if t == endoftext else t for t in target]
    cur = 1
    for i, turn in enumerate(_re_turns(conversation, end)):
        if turn == "":
            break
        turn_len = len(tokenizer(turn)["input_ids"]) - (0 if i == 0 else lead - 2)
        parts = turn.split(end + assistant)
        if len(parts) != 2:
            break
        instruction = len(tokenizer(parts[0] + end + assistant)["input_ids"]) - (1 if i == 0 else lead - 1)
        target[cur:cur + instruction] = [IGNORE_INDEX] * instruction
        cur += turn_len
    target[cur:] = [IGNORE_INDEX] * (len(target) - cur)
    assert cur == len(ids), "tokenization mismatch (InternVL would mask the whole sample)"
    return ids, target


REFERENCES = {"internlm2-chat": internvl_preprocess_internlm, "Hermes-2": internvl_preprocess_mpt,
              "phi3-chat": internvl_preprocess_phi3}


@pytest.mark.parametrize("family, template", [("llama3", "internlm2-chat"), ("internlm2", "internlm2-chat"),
                                              ("phi3", "phi3-chat"), ("qwen2", "Hermes-2")])
@pytest.mark.parametrize("conversation, tiles", CONVERSATIONS)
def test_ids_and_labels_match_internvl_for_whole_conversation_templates(family, template, conversation, tiles):
    tokenizer = _tokenizer(family)
    turns = [Turn("user" if c["from"] == "human" else "assistant", c["value"]) for c in conversation]
    enc = ChatEncoder.from_recipe(tokenizer, template, "default").encode(turns, tiles)
    text = _mpt_prompt(template, [dict(c) for c in conversation], [TOKENS_PER_TILE * t for t in tiles])
    ids, labels = REFERENCES[template](tokenizer, text)
    assert enc.input_ids.tolist() == ids and enc.labels.tolist() == labels
    answers = [c["value"] for c in conversation if c["from"] == "gpt"]
    supervised = tokenizer.decode([t for t in labels if t != IGNORE_INDEX]).replace(" ", "")
    assert supervised == "".join(a + MPT_FORMS[template][3] for a in answers).replace(" ", "")
    bos = FAMILIES[family][1]
    assert ids.count(tokenizer.bos_token_id) == (1 if bos else 0) if tokenizer.bos_token_id is not None else True


def test_a_leading_space_in_an_answer_is_stripped_only_where_internvl_strips_it():
    tokenizer = _tokenizer("llama3")
    turns = [Turn("user", "  Compare them. "), Turn("assistant", " Blue. ")]
    internlm = ChatEncoder.from_recipe(tokenizer, "internlm2-chat", "default").encode(turns, [])
    hermes = ChatEncoder.from_recipe(tokenizer, "Hermes-2", "default").encode(turns, [])
    assert "<|im_start|>user\nCompare them.<|im_end|><|im_start|>assistant\nBlue.<|im_end|>" in \
        tokenizer.decode(internlm.input_ids)
    assert "<|im_start|>assistant\n Blue. <|im_end|>" in tokenizer.decode(hermes.input_ids)


def test_phi3_never_supervises_endoftext_and_generation_stops_at_its_end_of_turn():
    tokenizer = _tokenizer("phi3")
    encoder = ChatEncoder.from_recipe(tokenizer, "auto", "default")
    assert encoder.template == "phi3-chat" and encoder.end_of_turn == "<|end|>"
    enc = encoder.encode([Turn("user", "Blue."), Turn("assistant", "Red.<|endoftext|>")], [])
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert endoftext in enc.input_ids.tolist() and endoftext not in enc.labels.tolist()
    prompt = encoder.encode([Turn("user", "<image>\nBlue.")], [2], generation=True)
    assert tokenizer.decode(prompt.input_ids[-2:]).replace(" ", "") == "<|assistant|>\n"
    (start, end, _), = prompt.image_spans
    assert prompt.input_ids[start] == tokenizer.convert_tokens_to_ids("<img>") and end - start == 2 + 2 * TOKENS_PER_TILE


def test_auto_reads_the_checkpoint_template_then_the_tokens_then_the_chat_template(tmp_path):
    """An InternVL checkpoint names its template in config.json (InternVL2-Llama3-76B:
    internlm2-chat); without one, ChatML tokens mean internvl2_5 and Phi-3's mean phi3-chat."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    llama = tmp_path / "InternVL2-Llama3-76B"
    _tokenizer("llama3").save_pretrained(llama)
    (llama / "config.json").write_text('{"architectures": ["InternVLChatModel"], "template": "internlm2-chat"}')
    loaded = AutoTokenizer.from_pretrained(llama)
    assert ChatEncoder.from_recipe(loaded, "auto", "default").template == "internlm2-chat"
    assert ChatEncoder.resolve("auto", str(llama)) == "internlm2-chat"
    (llama / "config.json").write_text("{}")
    assert ChatEncoder.from_recipe(loaded, "auto", "default", source=str(llama)).template == "internvl2_5"
    assert ChatEncoder.from_recipe(_tokenizer("qwen2"), "auto", "default").template == "internvl2_5"
    phi3 = ChatEncoder.from_recipe(_tokenizer("phi3"), "auto", "default")
    assert phi3.template == "phi3-chat" and phi3.system_prompt == INTERNVL2_SYSTEM
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=["</s>"] + IMAGE))
    bare = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>")  # no ChatML, no Phi-3 tokens
    with pytest.raises(ConfigError, match="template: auto"):
        ChatEncoder.from_recipe(bare, "auto", "default")
    bare.chat_template = CHATML.replace("im_start", "turn")
    assert ChatEncoder.from_recipe(bare, "auto", "default").template == "tokenizer"


def test_a_recipe_with_an_unknown_template_fails_at_load():
    from packing.config import PackConfig

    with pytest.raises(ConfigError, match="phi3-chat"):
        PackConfig(template="phi3")
