"""Check one parsed JSONL row against the chat-completion data contract. Pure; no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.chatdata.codes import ErrorCode

ALLOWED_MESSAGE_KEYS = frozenset({"role", "content", "name"})
CHARS_PER_TOKEN = 4
TEMPLATE_TOKENS_PER_MESSAGE = 4


@dataclass(frozen=True, slots=True)
class Problem:
    code: ErrorCode
    message: str


# What the stats and the duplicate check need to know of a valid example, in this order:
# messages, turns, characters, estimated tokens, assistant characters, assistant estimated tokens, and a
# fingerprint that is equal for equal (role, content) sequences within one process.
# A plain tuple: building a NamedTuple costs ten times more, on every line of multi-GB files.
ExampleShape = tuple[int, int, int, int, int, int, int]


def check_example(row: object) -> tuple[list[Problem], ExampleShape | None]:
    """Return every problem in the row, and its shape when there are none."""
    shape = valid_example_shape(row)
    if shape is not None:
        return [], shape
    if type(row) is not dict:
        return [Problem(ErrorCode.NOT_AN_OBJECT, f"expected a JSON object, got {_json_type(row)}")], None
    if "messages" not in row:
        keys = ", ".join(sorted(map(str, row))) or "none"
        return [Problem(ErrorCode.MISSING_MESSAGES, f"no 'messages' key (keys present: {keys})")], None
    messages = row["messages"]
    if type(messages) is not list:
        return [Problem(ErrorCode.MESSAGES_NOT_A_LIST, f"'messages' is {_json_type(messages)}, not a list")], None

    problems: list[Problem] = []
    if len(messages) < 2:
        problems.append(
            Problem(
                ErrorCode.TOO_FEW_MESSAGES,
                f"{len(messages)} message(s); a conversation needs a user and an assistant message",
            )
        )
    users = assistants = characters = assistant_characters = 0
    fingerprint = len(messages)
    last_role = None
    for index, message in enumerate(messages):
        if type(message) is not dict:
            problems.append(
                Problem(ErrorCode.MESSAGE_NOT_AN_OBJECT, f"messages[{index}] is {_json_type(message)}, not an object")
            )
            last_role = None
            continue
        role = message.get("role")
        content = message.get("content")
        if len(message) != 2 or role is None or content is None:
            problems.extend(_key_problems(index, message))
        if role == "assistant":
            assistants += 1
            if type(content) is str:
                assistant_characters += len(content)
        elif role == "user":
            users += 1
        elif role == "system":
            if index:
                problems.append(
                    Problem(ErrorCode.SYSTEM_NOT_FIRST, f"messages[{index}] is a system message; only the first may be")
                )
        elif "role" in message:
            problems.append(
                Problem(
                    ErrorCode.UNRECOGNIZED_ROLE,
                    f"messages[{index}].role is {_short(role)}; expected system, user or assistant",
                )
            )
            role = None  # may be unhashable; the line is invalid anyway
        last_role = role
        if type(content) is str:
            if not content or content.isspace():
                problems.append(
                    Problem(ErrorCode.EMPTY_CONTENT, f"messages[{index}].content is empty or only whitespace")
                )
            characters += len(content)
            fingerprint = hash((fingerprint, role, content))
        elif "content" in message:
            problems.append(
                Problem(
                    ErrorCode.CONTENT_NOT_A_STRING, f"messages[{index}].content is {_json_type(content)}, not a string"
                )
            )

    if messages:
        if not users:
            problems.append(Problem(ErrorCode.MISSING_USER_MESSAGE, "no message has role 'user'"))
        if not assistants:
            problems.append(Problem(ErrorCode.MISSING_ASSISTANT_MESSAGE, "no message has role 'assistant'"))
        elif last_role != "assistant":
            problems.append(
                Problem(ErrorCode.LAST_MESSAGE_NOT_ASSISTANT, "the last message must be the assistant's answer")
            )
    if problems:
        return problems, None
    return [], _shape(len(messages), assistants, characters, assistant_characters, fingerprint)


def valid_example_shape(row: object) -> ExampleShape | None:
    """The shape of a row that passes every check; None when check_example has to look closer.

    The fast path for the common case, which runs once per line of multi-GB files: it gives up at the
    first thing out of the ordinary (a "name" key included) rather than say what is wrong, and computes
    the same shape and fingerprint as check_example does.
    """
    if type(row) is not dict:
        return None
    messages = row.get("messages")
    if type(messages) is not list:
        return None
    count = len(messages)
    if count < 2:
        return None
    users = assistants = characters = assistant_characters = 0
    fingerprint = count
    role = None
    try:
        for message in messages:
            if type(message) is not dict or len(message) != 2:
                return None
            # Subscripts rather than .get(): a missing key raises KeyError, handled below.
            role = message["role"]
            content = message["content"]
            if type(content) is not str or not content or content.isspace():
                return None
            if role == "assistant":
                assistants += 1
                assistant_characters += len(content)
            elif role == "user":
                users += 1
            elif role != "system" or characters:  # characters is 0 on the first message only
                return None
            characters += len(content)
            fingerprint = hash((fingerprint, role, content))
    except KeyError:
        return None
    if not users or role != "assistant":
        return None
    return _shape(count, assistants, characters, assistant_characters, fingerprint)


def _shape(count: int, assistants: int, characters: int, assistant_characters: int, fingerprint: int) -> ExampleShape:
    """The shape of a valid example from its counts: the token estimates are derived here, for both paths."""
    return (
        count,
        assistants,
        characters,
        -(-characters // CHARS_PER_TOKEN) + TEMPLATE_TOKENS_PER_MESSAGE * count,
        assistant_characters,
        -(-assistant_characters // CHARS_PER_TOKEN),
        fingerprint,
    )


def _key_problems(index: int, message: dict) -> list[Problem]:
    problems = [
        Problem(ErrorCode.MESSAGE_MISSING_KEY, f"messages[{index}] has no '{key}'")
        for key in ("role", "content")
        if key not in message
    ]
    unknown = sorted(str(key) for key in message if key not in ALLOWED_MESSAGE_KEYS)
    if unknown:
        problems.append(
            Problem(
                ErrorCode.MESSAGE_UNRECOGNIZED_KEY,
                f"messages[{index}] has unrecognized key(s) {', '.join(map(repr, unknown))}; "
                "allowed: role, content, name",
            )
        )
    return problems


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
