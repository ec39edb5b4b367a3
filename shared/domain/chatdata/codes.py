"""Stable problem codes of the validation report (DESIGN.md, "Validation report")."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # line level
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_MESSAGES = "missing_messages"
    MESSAGES_NOT_A_LIST = "messages_not_a_list"
    TOO_FEW_MESSAGES = "too_few_messages"
    MESSAGE_NOT_AN_OBJECT = "message_not_an_object"
    MESSAGE_MISSING_KEY = "message_missing_key"
    MESSAGE_UNRECOGNIZED_KEY = "message_unrecognized_key"
    UNRECOGNIZED_ROLE = "unrecognized_role"
    CONTENT_NOT_A_STRING = "content_not_a_string"
    EMPTY_CONTENT = "empty_content"
    SYSTEM_NOT_FIRST = "system_not_first"
    MISSING_USER_MESSAGE = "missing_user_message"
    MISSING_ASSISTANT_MESSAGE = "missing_assistant_message"
    LAST_MESSAGE_NOT_ASSISTANT = "last_message_not_assistant"
    LINE_TOO_LONG = "line_too_long"
    # dataset level (reported with line None)
    EMPTY_DATASET = "empty_dataset"
    TOO_FEW_EXAMPLES = "too_few_examples"


class WarningCode(StrEnum):
    BLANK_LINE = "blank_line"
    DUPLICATE_PROMPT_ID = "duplicate_prompt_id"
    DUPLICATE_CONVERSATION = "duplicate_conversation"
    EXCEEDS_MAX_SEQ_LENGTH = "exceeds_max_seq_length"
