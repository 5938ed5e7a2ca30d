"""What the terminal prints is the message itself: brackets in errors and logs are text, not rich markup."""

from __future__ import annotations

from orchestrator import terminal

MESSAGES = [
    "vocabulary.trim is 'corpus' but search_space.vocabulary has no 'trimmed' value (e.g. [full, trimmed])",
    "BertModel is not a BERT-like encoder: expected base_model.encoder.layer[i] with attention",
]


def test_log_and_say_print_brackets_as_written():
    with terminal.console.capture() as captured:
        for message in MESSAGES:
            terminal.log(message)
            terminal.say(message)
    text = captured.get()
    for message in MESSAGES:
        assert text.count(message) == 2, text


def test_cli_errors_print_brackets_as_written():
    import pytest
    import typer

    from orchestrator.cli import _fail

    with terminal.console.capture() as captured, pytest.raises(typer.Exit):
        _fail(MESSAGES[0])
    assert MESSAGES[0] in captured.get()
