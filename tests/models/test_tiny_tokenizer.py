"""The character-level tokenizer of the tiny models: one token per character and per tag, distinct
special ids, a chat template, and a saved directory that loads back identically."""

from __future__ import annotations

import string

import pytest

from r1kit.models.load import load_tokenizer
from r1kit.models.tiny import DEFAULT_ALPHABET, SPECIAL_TOKENS, TAG_TOKENS, alphabet_for, build_char_tokenizer


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_every_alphabet_character_is_one_token_and_round_trips(char_tokenizer):
    for ch in DEFAULT_ALPHABET:
        encoded = ids(char_tokenizer, ch)
        assert len(encoded) == 1, f"{ch!r} -> {encoded}"
        assert encoded[0] != char_tokenizer.unk_token_id, f"{ch!r} is unknown"
        assert char_tokenizer.decode(encoded) == ch
    # The whole alphabet at once: one token per character, decoded back verbatim.
    assert len(ids(char_tokenizer, DEFAULT_ALPHABET)) == len(DEFAULT_ALPHABET)
    assert char_tokenizer.decode(ids(char_tokenizer, DEFAULT_ALPHABET)) == DEFAULT_ALPHABET


def test_alphabet_characters_have_distinct_ids(char_tokenizer):
    all_ids = [ids(char_tokenizer, ch)[0] for ch in DEFAULT_ALPHABET]
    assert len(set(all_ids)) == len(DEFAULT_ALPHABET)
    # vocab = 4 specials + 4 tags + the alphabet, nothing else
    assert len(char_tokenizer) == len(SPECIAL_TOKENS) + len(TAG_TOKENS) + len(DEFAULT_ALPHABET)


def test_the_default_vocabulary_is_unchanged():
    # Every cached base and saved tiny model carries these ids: 4 specials, 4 tags, then the alphabet.
    assert DEFAULT_ALPHABET == "0123456789" + string.ascii_lowercase + string.ascii_uppercase + " \n+-*/=()<>.,:;?!'\"_#%&[]{}|\\^~`@$"
    vocab = build_char_tokenizer().get_vocab()
    assert len(vocab) == 104 and vocab == {t: i for i, t in enumerate(SPECIAL_TOKENS + TAG_TOKENS + list(DEFAULT_ALPHABET))}


def test_a_corpus_alphabet_adds_only_the_characters_outside_the_default_sorted():
    assert alphabet_for(["Q: 7+8=?\nA: <think>7+8=15. So 15</think>", "x"]) == DEFAULT_ALPHABET
    # ά U+03AC, α U+03B1, ε U+03B5, μ U+03BC, ρ U+03C1, τ U+03C4
    assert alphabet_for(["7+8=15 μετά 15+6=21 άρα 21", "then"]) == DEFAULT_ALPHABET + "άαεμρτ"
    greek = build_char_tokenizer(alphabet_for(["μετά"]))
    assert greek.get_vocab()["a"] == build_char_tokenizer().get_vocab()["a"]  # the default ids stay; new letters come after
    assert greek.decode(ids(greek, "7 μετά")) == "7 μετά" and greek.unk_token_id not in ids(greek, "μετά")


@pytest.mark.parametrize("tag", TAG_TOKENS)
def test_tag_is_a_single_token_that_round_trips(char_tokenizer, tag):
    encoded = ids(char_tokenizer, tag)
    assert encoded == [char_tokenizer.convert_tokens_to_ids(tag)]
    assert char_tokenizer.decode(encoded) == tag


def test_tagged_response_costs_one_token_per_tag_and_per_character(char_tokenizer):
    text = "<think>3+4=7</think><answer>7</answer>"
    # 4 tags + "3+4=7" (5 chars) + "7" (1 char)
    assert len(ids(char_tokenizer, text)) == 4 + 5 + 1
    assert char_tokenizer.decode(ids(char_tokenizer, text)) == text
    # A partial tag is plain characters, not a tag token.
    assert len(ids(char_tokenizer, "<thin")) == 5


def test_character_outside_the_alphabet_maps_to_unk(char_tokenizer):
    assert ids(char_tokenizer, "é") == [char_tokenizer.unk_token_id]


def test_pad_bos_eos_unk_ids_are_distinct(char_tokenizer):
    special = [char_tokenizer.pad_token_id, char_tokenizer.bos_token_id, char_tokenizer.eos_token_id, char_tokenizer.unk_token_id]
    assert None not in special
    assert len(set(special)) == 4
    assert [char_tokenizer.pad_token, char_tokenizer.bos_token, char_tokenizer.eos_token] == ["<pad>", "<bos>", "<eos>"]


def test_chat_template_renders_role_prefixed_turns(char_tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+2=?"}]
    text = char_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "system: Be brief.\nuser: 1+2=?\nassistant: "
    without = char_tokenizer.apply_chat_template(messages[1:], tokenize=False, add_generation_prompt=False)
    assert without == "user: 1+2=?"


def test_saved_tokenizer_loads_back_with_identical_ids_and_left_padding(tiny_model_dir, char_tokenizer):
    loaded = load_tokenizer(str(tiny_model_dir))
    text = DEFAULT_ALPHABET + "".join(TAG_TOKENS)
    assert ids(loaded, text) == ids(char_tokenizer, text)
    assert loaded.get_vocab() == char_tokenizer.get_vocab()
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id) == (
        char_tokenizer.pad_token_id,
        char_tokenizer.bos_token_id,
        char_tokenizer.eos_token_id,
    )
    assert loaded.padding_side == "left"
    batch = loaded(["ab", "abcd"], add_special_tokens=False, padding=True)
    pad = loaded.pad_token_id
    assert batch["input_ids"][0][:2] == [pad, pad]
    assert batch["input_ids"][0][2:] == batch["input_ids"][1][:2]
    assert batch["attention_mask"] == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert loaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True) == "user: hi\nassistant: "


def test_a_qwen2_directory_loads_the_saved_char_tokenizer(tmp_path, char_tokenizer):
    # transformers would substitute its Qwen2 BPE tokenizer class and drop spaces and newlines.
    from r1kit.models.load import load_tokenizer
    from r1kit.models.tiny import TinyModelConfig, save_tiny

    save_tiny(tmp_path, char_tokenizer, TinyModelConfig(arch="qwen2", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1))
    tok = load_tokenizer(str(tmp_path))
    text = "Q: 12+3=?\nA: <think>12+3=15</think><answer>15</answer>"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok(text)["input_ids"] == char_tokenizer(text)["input_ids"]
