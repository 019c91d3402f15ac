"""Chat data, whole: message-list prompts render every turn through the chat template, SFT
conversations put loss on assistant tokens only, conversational preference pairs keep the
template's turn markers, and nothing is dropped silently."""

from __future__ import annotations

import pytest

from r1kit.config import DataArgs
from r1kit.data.chat import chat_segments, row_segments
from r1kit.data.preference import encode_pairs
from r1kit.data.templates import render_prompt
from r1kit.errors import R1kitError
from r1kit.train.supervised import IGNORE, tokenize_segments

SYSTEM = {"role": "system", "content": "Be brief."}
CONVERSATION = [
    SYSTEM,
    {"role": "user", "content": "1+1=?"},
    {"role": "assistant", "content": "<answer>2</answer>"},
    {"role": "user", "content": "and 2+2?"},
    {"role": "assistant", "content": "4"},
]


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_message_list_prompt_renders_every_turn_with_the_generation_prompt(char_tokenizer):
    prompt = CONVERSATION[:4]
    assert render_prompt(prompt, "chat", char_tokenizer) == "system: Be brief.\nuser: 1+1=?\nassistant: <answer>2</answer>\nuser: and 2+2?\nassistant: "
    # a final assistant message is continued, not closed (a prefilled reply)
    prefilled = [{"role": "user", "content": "1+1=?"}, {"role": "assistant", "content": "<think>"}]
    assert render_prompt(prefilled, "chat", char_tokenizer) == "user: 1+1=?\nassistant: <think>"


def test_message_lists_need_the_chat_template_and_a_tokenizer_that_has_one(char_tokenizer):
    with pytest.raises(R1kitError, match=r"a prompt given as chat messages is rendered through the tokenizer's chat template; set data.template=chat \(it is 'tiny'\)"):
        render_prompt(CONVERSATION[:2], "tiny", char_tokenizer)
    tok = char_tokenizer.__class__(tokenizer_object=char_tokenizer.backend_tokenizer, eos_token="<eos>", pad_token="<pad>")
    assert not getattr(tok, "chat_template", None)
    with pytest.raises(R1kitError, match="the tokenizer has none"):
        render_prompt(CONVERSATION[:2], "chat", tok)


def test_a_rows_system_message_and_data_system_prompt_together_are_an_error(char_tokenizer):
    with pytest.raises(R1kitError, match="a prompt has its own system message and data.system_prompt is set too"):
        render_prompt(CONVERSATION[:2], "chat", char_tokenizer, "Think.")
    assert render_prompt(CONVERSATION[1:2], "chat", char_tokenizer, "Think.") == "system: Think.\nuser: 1+1=?\nassistant: "


def test_malformed_messages_are_an_error_naming_the_message(char_tokenizer):
    with pytest.raises(R1kitError, match=r"each chat message must be a dict with a string `role` and `content`, got \{'role': 'user'\}"):
        render_prompt([{"role": "user"}], "chat", char_tokenizer)


def test_sft_on_messages_puts_loss_on_assistant_tokens_only(char_tokenizer):
    segments = row_segments({"messages": CONVERSATION}, DataArgs(template="chat"), char_tokenizer, "cot")
    assert segments == [
        ("system: Be brief.\nuser: 1+1=?\nassistant: ", False),
        ("<answer>2</answer>", True),
        ("\nuser: and 2+2?\nassistant: ", False),
        ("4", True),
    ]
    (example,), truncated = tokenize_segments(char_tokenizer, [segments], max_length=256)
    eos = char_tokenizer.eos_token_id
    assert truncated == 0
    assert example.input_ids == ids(char_tokenizer, "".join(t for t, _ in segments)) + [eos]
    trained = [i for i, label in zip(example.input_ids, example.labels) if label != IGNORE]
    assert trained == ids(char_tokenizer, "<answer>2</answer>") + ids(char_tokenizer, "4") + [eos]
    # every system and user character is masked (one token each): 41 + 27; trained: 3 + 1 + eos
    assert example.labels.count(IGNORE) == len(ids(char_tokenizer, segments[0][0])) + len(ids(char_tokenizer, segments[2][0])) == 41 + 27
    assert len(trained) == 5


def test_a_template_ending_turns_in_eos_gets_no_second_eos(char_tokenizer):
    tok = char_tokenizer.__class__(tokenizer_object=char_tokenizer.backend_tokenizer, eos_token="<eos>", pad_token="<pad>")
    tok.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}{% if m.role == 'assistant' %}<eos>{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    segments = chat_segments(tok, CONVERSATION[1:3])
    assert segments == [("user: 1+1=?\nassistant: ", False), ("<answer>2</answer><eos>\n", True)]
    (example,), _ = tokenize_segments(tok, [segments], max_length=256)
    assert example.input_ids.count(tok.eos_token_id) == 1


def test_a_template_that_rewrites_earlier_turns_is_an_error(char_tokenizer):
    tok = char_tokenizer.__class__(tokenizer_object=char_tokenizer.backend_tokenizer, eos_token="<eos>", pad_token="<pad>")
    # drops every assistant turn but the last, as templates that strip past reasoning do
    tok.chat_template = "{% for m in messages %}{% if m.role != 'assistant' or loop.last %}{{ m.role }}: {{ m.content }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    with pytest.raises(R1kitError, match="does not render assistant turn 2 as a continuation of the turns before it"):
        chat_segments(tok, CONVERSATION)


def test_a_conversation_without_an_assistant_turn_is_an_error(char_tokenizer):
    with pytest.raises(R1kitError, match=r"a conversation has no assistant turn to train on \(roles \['system', 'user'\]\)"):
        chat_segments(char_tokenizer, CONVERSATION[:2])


def test_prompt_messages_with_an_assistant_message_completion_train_on_the_completion(char_tokenizer):
    row = {"prompt": CONVERSATION[:4], "completion": [{"role": "assistant", "content": "4"}]}
    segments = row_segments(row, DataArgs(template="chat"), char_tokenizer, "completion")
    assert [t for t, trainable in segments if trainable] == ["4"]  # the earlier assistant turn is context
    assert "".join(t for t, _ in segments) == char_tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    text_row = {"prompt": CONVERSATION[:4], "completion": "4"}  # a text response after a message-list prompt
    assert row_segments(text_row, DataArgs(template="chat"), char_tokenizer, "completion") == [(render_prompt(CONVERSATION[:4], "chat", char_tokenizer), False), ("4", True)]


def test_conversational_preference_pairs_render_the_prompt_whole_and_completions_after_it(char_tokenizer):
    pair = {"prompt": CONVERSATION[:2], "chosen": [{"role": "assistant", "content": "2"}], "rejected": [{"role": "assistant", "content": "3"}]}
    (encoded,), truncated = encode_pairs(char_tokenizer, [pair], template="chat", max_length=256, add_eos=True)
    assert encoded.prompt == ids(char_tokenizer, "system: Be brief.\nuser: 1+1=?\nassistant: ")
    eos = char_tokenizer.eos_token_id
    assert (encoded.chosen, encoded.rejected, truncated) == (ids(char_tokenizer, "2") + [eos], ids(char_tokenizer, "3") + [eos], 0)
    text_pair = {"prompt": CONVERSATION[:2], "chosen": "2", "rejected": "3"}
    assert encode_pairs(char_tokenizer, [text_pair], template="chat", max_length=256, add_eos=True)[0][0] == encoded
    with pytest.raises(R1kitError, match=r"preference pair 0: 'chosen' holds chat messages, which are rendered through the chat template; set data.template=chat"):
        encode_pairs(char_tokenizer, [{**pair, "prompt": "1+1=?"}], template="tiny")
