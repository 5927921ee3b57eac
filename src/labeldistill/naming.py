"""Run folder names: one safe path component each (never '..', a separator or a control character)."""
from __future__ import annotations

import unicodedata

MAX_NAME_BYTES = 200  # file systems allow 255 bytes per name; leave room for suffixes


def run_name_problem(name: str) -> str | None:
    """Why `name` cannot be a run folder's name (a single safe path component), or None."""
    if name.strip() != name or not name:
        return "must not be empty or start or end with spaces"
    if name in (".", ".."):
        return "would be the output folder or its parent"
    if "/" in name or "\\" in name:
        return "cannot contain '/' or '\\'"
    if any(unicodedata.category(ch)[0] == "C" or (ch.isspace() and ch != " ") for ch in name):
        return "cannot contain control characters (NUL, tabs, newlines)"
    if len(name.encode()) > MAX_NAME_BYTES:
        return f"must be at most {MAX_NAME_BYTES} bytes long"
    return None


def safe_run_name(text: str) -> str:
    """`text` made a single safe path component: separators, spaces and control characters
    become '_', leading dots go (no hidden or '..' folder), and it is cut to MAX_NAME_BYTES."""
    safe = "".join("_" if ch in "/\\" or ch.isspace() or unicodedata.category(ch)[0] == "C" else ch
                   for ch in text).lstrip(".")
    safe = safe.encode()[:MAX_NAME_BYTES].decode(errors="ignore")
    return safe or "run"
