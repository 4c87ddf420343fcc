"""Instruction text: the length cap every input path applies, and the bounded form that goes into logs."""

from __future__ import annotations

DEFAULT_MAX_INSTRUCTION_LENGTH = 512  # characters; the T5 encoder reads 226 tokens, longer text is truncated anyway
LOG_TEXT_LIMIT = 80  # characters of user text a log line or status message shows


def bounded(text: str, limit: int = LOG_TEXT_LIMIT) -> str:
    """repr() of `text`, cut to about `limit` characters with the full length named (for logs and messages)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def check_instruction(text: str, max_length: int, source: str = "instruction") -> str:
    """The stripped instruction; raises ValueError naming `source` when it is empty or longer than `max_length`."""
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"{source} must be a non-empty string, got {bounded(text)}")
    if len(stripped) > max_length:
        raise ValueError(
            f"{source} is {len(stripped)} characters long, more than max_instruction_length={max_length}: "
            f"{bounded(stripped)}"
        )
    return stripped
