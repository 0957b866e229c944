"""Error messages that point into a text file: `file:line:col: message`, the line, a caret.
Shared by the `.aras` parser and the compiler's IR parser."""


def render_error(source: str, filename: str, line: int, column: int, message: str) -> str:
    lines = source.splitlines()
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    return f"{filename}:{line}:{column}: {message}\n    {text}\n    {' ' * max(column - 1, 0)}^"
