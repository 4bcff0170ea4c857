#!/usr/bin/env python3
"""Shorten the lines that ruff's E501 flags, without changing what the program does.

    python tools/wrap_long_lines.py [--width 100] [--check] [--no-format] [--ruff PATH] PATHS...

Rewrites .py files in place (directories are walked; .venv*, build, docs/api, .git, node_modules
and __pycache__ are skipped). Only what holds a line longer than the width is touched:

1. a long full-line comment: its paragraph (same indentation and prefix; a bullet with its
   hanging continuation lines) is refilled with textwrap; comments that look like code, hold a
   URL, are indented past their prefix or are pragmas (``# noqa``, ``# type:``...) stay, reported;
2. a long line's trailing comment moves onto its own line(s) above the code line, at the code
   line's indentation (not when the line ends a multi-line string or follows a backslash
   continuation; pragma comments stay put);
3. a long string literal (plain, f-, raw, bytes; not a docstring, not triple-quoted) is cut after
   spaces (or a ``\\n``) into adjacent literals, never inside an f-string's ``{...}`` field nor an
   escape sequence; a part of an f-string without a field loses its ``f`` (``{{`` becomes ``{``).
   An implicit concatenation the literal belongs to is re-flowed as a whole when its parts share
   quotes and prefix. The parts are parenthesized outside brackets and after ``=`` or ``:``
   (keyword arguments, dict values). A literal that cannot be cut so that every part fits (a
   field or word too long) is left whole and reported;
4. a long docstring line is broken at the last space before the width, continuing with the
   line's own indentation (a bullet's hanging indentation) and carrying the overflow into the
   next line of the same paragraph; fenced ``` blocks, ``>>>`` examples and indented literal
   blocks (after a blank line or ``::``) are left alone and reported.

Each file is then formatted with ``ruff format --line-length WIDTH`` ($RUFF, the ruff next to
sys.executable, on PATH, or in a .venv above the paths; without one the parts are laid out one a
line anyway) and the steps repeat until nothing changes. Safety: the original and the rewritten
source must give the same ``ast.dump`` (whitespace runs in docstrings collapsed, adjacent constant
pieces of f-strings merged); a file where they differ is left unchanged and reported (exit 1).
Running the tool twice changes nothing the second time. ``--check`` writes nothing and exits 1
when a file would change.
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tokenize
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

SKIP_DIRS = {".git", "__pycache__", "build", "node_modules"}
PRAGMA_RE = re.compile(
    r"#\s*(noqa|type:|pyright:|pylint:|mypy:|nosec|isort:|ruff:|fmt:|pragma|flake8)", re.I
)
URL_RE = re.compile(r"\w+://\S+")
STRING_PREFIX_RE = re.compile(r"^([A-Za-z]*)('''|\"\"\"|'|\")", re.S)


# ---------------------------------------------------------------------------------------------
# measuring lines the way ruff's E501 does


def str_width(s: str) -> int:
    w = 0
    for ch in s:
        if ch == "\t":
            w += 4
        elif unicodedata.combining(ch):
            continue
        elif unicodedata.east_asian_width(ch) in ("W", "F"):
            w += 2
        else:
            w += 1
    return w


def strip_pragmas(line: str) -> str:
    """The line without trailing pragma comments (ruff does not count them)."""
    m = PRAGMA_RE.search(line)
    while m is not None:
        line = line[: m.start()].rstrip()
        m = PRAGMA_RE.search(line)
    return line


def is_overlong(line: str, width: int) -> bool:
    line = line.rstrip("\r\n")
    if str_width(line) <= width:
        return False
    line = strip_pragmas(line)
    w = str_width(line)
    if w <= width:
        return False
    chunks = line.split()
    if len(chunks) < 2:
        return False
    if chunks[0] == "#" and len(chunks) == 2:
        return False
    last = chunks[-1]
    if "://" in last and w - str_width(last) <= width:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# tokens (f-strings of Python >= 3.12 are merged back into one STRING token)


@dataclass
class Tok:
    type: int
    string: str
    start: tuple[int, int]
    end: tuple[int, int]
    depth: int = 0  # bracket depth before the token


def tokens(src: str) -> list[Tok]:
    out: list[Tok] = []
    raw = list(tokenize.generate_tokens(io.StringIO(src).readline))
    fs_start = getattr(tokenize, "FSTRING_START", None)
    fs_end = getattr(tokenize, "FSTRING_END", None)
    lines = src.splitlines(keepends=True)
    depth = 0
    i = 0
    while i < len(raw):
        t = raw[i]
        if fs_start is not None and t.type == fs_start:
            nest = 0
            j = i
            while True:
                if raw[j].type == fs_start:
                    nest += 1
                elif raw[j].type == fs_end:
                    nest -= 1
                    if nest == 0:
                        break
                j += 1
            start, end = t.start, raw[j].end
            text = _slice(lines, start, end)
            out.append(Tok(tokenize.STRING, text, start, end, depth))
            i = j + 1
            continue
        tok = Tok(t.type, t.string, t.start, t.end, depth)
        if t.type == tokenize.OP:
            if t.string in "([{":
                depth += 1
            elif t.string in ")]}":
                depth -= 1
        out.append(tok)
        i += 1
    return out


def _slice(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    (r0, c0), (r1, c1) = start, end
    if r0 == r1:
        return lines[r0 - 1][c0:c1]
    parts = [lines[r0 - 1][c0:]] + lines[r0 : r1 - 1] + [lines[r1 - 1][:c1]]
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# docstrings


def docstring_nodes(tree: ast.AST) -> list[ast.Constant]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                out.append(body[0].value)
    return out


class _Normalise(ast.NodeTransformer):
    def __init__(self, docstrings: set[int]):
        self.docstrings = docstrings

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if id(node) in self.docstrings and isinstance(node.value, str):
            return ast.Constant(value=" ".join(node.value.split()), kind=node.kind)
        return node

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        self.generic_visit(node)
        values: list[ast.AST] = []
        for v in node.values:
            if isinstance(v, ast.Constant) and values and isinstance(values[-1], ast.Constant):
                values[-1] = ast.Constant(value=values[-1].value + v.value)
            elif isinstance(v, ast.Constant):
                values.append(ast.Constant(value=v.value))
            else:
                values.append(v)
        values = [v for v in values if not (isinstance(v, ast.Constant) and v.value == "")]
        if all(isinstance(v, ast.Constant) for v in values):
            return ast.Constant(value="".join(v.value for v in values))
        return ast.JoinedStr(values=values)


def normalised_dump(src: str) -> str:
    tree = ast.parse(src)
    docs = {id(n) for n in docstring_nodes(tree)}
    tree = _Normalise(docs).visit(tree)
    return ast.dump(tree)


# ---------------------------------------------------------------------------------------------
# rule 3: splitting a string literal


def _string_atoms(body: str, is_f: bool, is_raw: bool) -> list[tuple[str, bool]] | None:
    """The body cut into pieces never to be split: (text, is_field). None if unparseable."""
    atoms: list[tuple[str, bool]] = []
    i, n = 0, len(body)
    while i < n:
        ch = body[i]
        if ch == "\\":
            if i + 1 >= n:
                return None
            j = i + 2
            if not is_raw:
                nxt = body[i + 1]
                if nxt == "x":
                    j = i + 4
                elif nxt == "u":
                    j = i + 6
                elif nxt == "U":
                    j = i + 10
                elif nxt == "N" and i + 2 < n and body[i + 2] == "{":
                    k = body.find("}", i + 2)
                    if k < 0:
                        return None
                    j = k + 1
                elif nxt in "01234567":
                    j = i + 2
                    while j < n and j < i + 4 and body[j] in "01234567":
                        j += 1
            atoms.append((body[i:j], False))
            i = j
        elif is_f and ch in "{}":
            if i + 1 < n and body[i + 1] == ch:
                atoms.append((body[i : i + 2], False))
                i += 2
                continue
            if ch == "}":
                return None
            depth, j, quote = 0, i, None
            while j < n:
                c = body[j]
                if quote:
                    if c == quote:
                        quote = None
                elif c in "'\"":
                    quote = c
                elif c in "{[(":
                    depth += 1
                elif c in "}])":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j >= n:
                return None
            atoms.append((body[i : j + 1], True))
            i = j + 1
        else:
            atoms.append((ch, False))
            i += 1
    return atoms


def split_string(token: str, budget: int) -> list[str] | None:
    """The literal as several literals, each at most ``budget`` wide, cut after runs of spaces;
    None if that is impossible or needless."""
    parts = _reflow(token and [token], budget)
    if parts is None or len(parts) < 2:
        return None
    return parts


def reflow_strings(strings: list[str], budget: int) -> list[str] | None:
    """Adjacent literals (one implicit concatenation) re-cut at spaces into parts at most
    ``budget`` wide; a cut after a ``\\n`` that ended a part is kept. None when the literals
    cannot be merged (different quotes, raw-ness, bytes) or nothing would change."""
    if len(strings) == 1:
        return split_string(strings[0], budget) or (
            strings if str_width(strings[0]) <= budget else None
        )
    return _reflow(strings, budget)


def _reflow(strings: list[str], budget: int) -> list[str] | None:
    infos = []
    for tok in strings:
        m = STRING_PREFIX_RE.match(tok)
        if not m or len(m.group(2)) == 3 or not tok.endswith(m.group(2)):
            return None
        infos.append((m.group(1).lower(), m.group(2), tok[m.end() : len(tok) - 1]))
    quote = infos[0][1]
    kinds = {(("r" in p), ("b" in p), ("u" in p), q) for p, q, _ in infos}
    if len(kinds) != 1 or any("t" in p for p, _, _ in infos):
        return None
    is_raw, is_bytes, is_u, _ = kinds.pop()
    if is_u:
        return None
    # (f-string text, plain text or None for a field) per atom; forced cuts after a part's \n
    atoms: list[tuple[str, str | None]] = []
    forced: set[int] = set()
    for p, _, body in infos:
        is_f = "f" in p
        parsed = _string_atoms(body, is_f, is_raw)
        if parsed is None:
            return None
        for text, is_field in parsed:
            if is_field:
                atoms.append((text, None))
            elif is_f and text in ("{{", "}}"):
                atoms.append((text, text[0]))
            elif not is_f and text in ("{", "}"):
                atoms.append((text * 2, text))
            else:
                atoms.append((text, text))
        if not is_raw and parsed and parsed[-1][0] == "\\n":
            forced.add(len(atoms))
    first_prefix = STRING_PREFIX_RE.match(strings[0]).group(1)
    rprefix = first_prefix.replace("f", "").replace("F", "")
    room_plain = max(budget - len(rprefix) - 2, 12)

    parts: list[list[tuple[str, str | None]]] = []
    start = 0
    n = len(atoms)
    while start < n:
        # the furthest cut (after a space, or a forced one) that keeps the part within room
        best = None
        k = start
        w_f = w_pl = 0
        has_field = False
        while k < n:
            f_text, pl_text = atoms[k]
            has_field = has_field or pl_text is None
            w_f += str_width(f_text)
            w_pl += str_width(pl_text if pl_text is not None else f_text)
            k += 1
            w = (w_f + 1) if has_field else w_pl
            if k in forced:
                if w <= room_plain or best is None:
                    best = k
                break
            if (
                (atoms[k - 1][0] == " " or (atoms[k - 1][0] == "\\n" and not is_raw))
                and k < n
                and atoms[k][0] != " "
            ):
                if w <= room_plain:
                    best = k
                elif best is None:
                    best = k
                    break
                else:
                    break
        else:
            w = (w_f + 1) if has_field else w_pl
            if w <= room_plain or best is None:
                best = n
        parts.append(atoms[start:best])
        start = best
    out = []
    for chunk in parts:
        if any(pl is None for _, pl in chunk):
            out.append(f"{rprefix}f{quote}{''.join(f for f, _ in chunk)}{quote}")
        else:
            out.append(f"{rprefix}{quote}{''.join(pl for _, pl in chunk)}{quote}")
    if any(str_width(part) > budget for part in out):
        return None
    return out


# ---------------------------------------------------------------------------------------------
# rule 1: comments


def comment_parts(line: str) -> tuple[str, str, str] | None:
    """(indentation, prefix, body) of a full-line comment."""
    m = re.match(r"^([ \t]*)(#+[:!]?[ \t]?)(.*?)\s*$", line)
    if not m:
        return None
    return m.group(1), m.group(2), m.group(3)


CODE_RE = re.compile(
    r"(^[\w.]+(\s*(=|\+=)\s|\(|\[)|[;{}]$|^(def|class|return|import|from|if|for|while|with)\s.*:$|"
    r"^[\w.\[\]]+\([^ ]*\)$)"
)


def comment_unwrappable(body: str) -> str | None:
    if PRAGMA_RE.match("#" + body) or PRAGMA_RE.search("#" + body):
        return "pragma comment"
    if body.startswith((" ", "\t")):
        return "preformatted comment (extra indentation)"
    if CODE_RE.search(body.strip()):
        return "comment looks like code"
    return None


BULLET_RE = re.compile(r"^([-*+]|\d+[.)])\s+")


def comment_kind(body: str) -> tuple[str, int]:
    """('bullet', hang) | ('cont', leading spaces) | ('plain', 0) | ('other', 0) of a body."""
    if not body.strip() or comment_unwrappable(body.strip()) is not None:
        return "other", 0
    if URL_RE.search(body):
        return "other", 0
    m = BULLET_RE.match(body)
    if m:
        return "bullet", len(m.group(0))
    lead = len(body) - len(body.lstrip(" "))
    if lead:
        return "cont", lead
    return "plain", 0


def wrap_comment_block(lines: list[str], width: int) -> tuple[list[str], list[str]]:
    """Refill one comment paragraph (same indentation and prefix; a bullet's continuation lines
    hang under its text). Returns the new lines and why a long line had to stay long."""
    indent, prefix, first_body = comment_parts(lines[0])  # type: ignore[misc]
    eol = lines[0][len(lines[0].rstrip("\r\n")) :] or "\n"
    long = [line for line in lines if is_overlong(line, width)]
    if len(lines) == 1:
        why = comment_unwrappable(first_body)
        if why is None and first_body.startswith((" ", "\t")):
            why = "preformatted comment (extra indentation)"
        if why is not None:
            return lines, [why] if long else []
    kind, hang = comment_kind(first_body)
    hang = hang if kind == "bullet" else 0
    text = " ".join(comment_parts(line)[2].strip() for line in lines)  # type: ignore[index]
    head = indent + prefix
    if str_width(head) + 20 > width:
        return lines, ["comment indented too deep to wrap"] if long else []
    wrapper = textwrap.TextWrapper(
        width=width,
        initial_indent=head,
        subsequent_indent=head + " " * hang,
        break_long_words=False,
        break_on_hyphens=False,
    )
    # greedy fill at the width, or a little narrower when that avoids a one-word last line
    best: tuple[tuple[int, int, int], list[str]] | None = None
    for w in range(width, width - 13, -1):
        wrapper.width = w
        out = wrapper.wrap(text)
        orphan = len(out) > 1 and len(out[-1][len(head) :].split()) < 2
        key = (len(out), int(orphan), width - w)
        if best is None or key < best[0]:
            best = (key, out)
    assert best is not None
    new = [line.rstrip() + eol for line in best[1]]
    problems = []
    for line in new:
        if is_overlong(line, width):
            problems.append(
                "comment holds a URL too long to fit"
                if URL_RE.search(line)
                else "comment word too long to wrap"
            )
    return new, problems


# ---------------------------------------------------------------------------------------------
# one pass over a source


def _in_literal_block(lines: list[str], row: int, first: int, base: int) -> bool:
    """Is docstring line ``row`` in a block indented past ``base`` that follows a blank line
    (a literal or code block, e.g. usage lines)?"""

    def ind(x: str) -> int:
        return len(x) - len(x.lstrip(" \t"))

    if ind(lines[row - 1]) <= base:
        return False
    r = row - 1
    while r > first and lines[r - 1].strip() and ind(lines[r - 1]) > base:
        r -= 1
    return (r > first and not lines[r - 1].strip()) or lines[r - 1].rstrip().endswith("::")


def _doc_continues(line: str, indent: str) -> bool:
    """Does this docstring line continue the paragraph of a line indented by ``indent``?"""
    body = line.rstrip("\r\n")
    stripped = body.strip()
    if not stripped or not body.startswith(indent) or body[len(indent) : len(indent) + 1] in " \t":
        return False
    if stripped.strip("\"'") == "" or stripped.startswith(
        ("-", "*", "+", ">>>", "...", "```", ":", "..", "|", "#")
    ):
        return False
    return re.match(r"^(\d+|[a-z])[.)]\s", stripped) is None


@dataclass
class PassResult:
    src: str
    problems: dict[int, str] = field(default_factory=dict)  # line -> why it stays long


def fix_pass(src: str, width: int) -> PassResult:
    lines = src.splitlines(keepends=True)
    long_lines = [i for i, line in enumerate(lines, 1) if is_overlong(line, width)]
    res = PassResult(src)
    if not long_lines:
        return res
    try:
        tree = ast.parse(src)
        toks = tokens(src)
    except (SyntaxError, tokenize.TokenError) as err:
        for i in long_lines:
            res.problems[i] = f"file does not parse ({err.__class__.__name__})"
        return res
    docstrings = {(n.lineno, n.col_offset) for n in docstring_nodes(tree)}

    by_line: dict[int, list[Tok]] = {}
    for t in toks:
        by_line.setdefault(t.start[0], []).append(t)
    # lines covered by a multi-line string token (not their first line): row -> token
    in_string: dict[int, Tok] = {}
    for t in toks:
        if t.type == tokenize.STRING and t.end[0] > t.start[0]:
            for r in range(t.start[0] + 1, t.end[0] + 1):
                in_string[r] = t
    # the token that ends just before each token (ignoring layout tokens)
    layout = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT}

    replace: dict[int, str] = {}  # line -> new text (maybe several lines)

    def first_code_token(row: int) -> Tok | None:
        for t in by_line.get(row, []):
            if t.type not in (tokenize.INDENT, tokenize.DEDENT):
                return t
        return None

    def continuation_safe(row: int) -> bool:
        """May a comment line be inserted just above ``row``?"""
        if row in in_string:
            return False
        if row > 1 and lines[row - 2].rstrip("\r\n").endswith("\\"):
            return False
        return True

    # --- rule 1: the comment paragraph around a long full-line comment is refilled
    def comment_row(r: int) -> tuple[str, str, str] | None:
        if r < 1 or r > len(lines) or r in in_string:
            return None
        first = first_code_token(r)
        if first is None or first.type != tokenize.COMMENT:
            return None
        return comment_parts(lines[r - 1])

    handled: set[int] = set()
    for row in long_lines:
        if row in handled:
            continue
        cp = comment_row(row)
        if cp is None:
            continue
        indent, prefix, body = cp

        def kind_at(r: int, indent: str = indent, prefix: str = prefix) -> tuple[str, int] | None:
            c = comment_row(r)
            if c is None or c[0] != indent or c[1] != prefix or r in handled:
                return None
            return comment_kind(c[2])

        kind, hang = comment_kind(body)
        start = end = row
        if kind == "other":
            handled.add(row)
            why = comment_unwrappable(body.strip()) or (
                "comment holds a URL too long to fit" if URL_RE.search(body) else "comment"
            )
            res.problems[row] = why
            continue
        if kind == "plain":
            while kind_at(start - 1) == ("plain", 0):
                start -= 1
            while kind_at(end + 1) == ("plain", 0):
                end += 1
        else:
            if kind == "cont":
                while kind_at(start - 1) == ("cont", hang):
                    start -= 1
                above = kind_at(start - 1)
                if above != ("bullet", hang):
                    handled.add(row)
                    res.problems[row] = "preformatted comment (extra indentation)"
                    continue
                start -= 1
            while kind_at(end + 1) == ("cont", hang):
                end += 1
        block = lines[start - 1 : end]
        new, problems = wrap_comment_block(block, width)
        handled.update(range(start, end + 1))
        if "".join(new) != "".join(block):
            replace[start] = "".join(new)
            for r in range(start + 1, end + 1):
                replace[r] = ""
        for p in problems:
            res.problems.setdefault(row, p)

    # --- rule 4: docstrings
    doc_tokens = [t for t in toks if t.type == tokenize.STRING and t.start in docstrings]
    for t in doc_tokens:
        rows_long = {r for r in long_lines if t.start[0] <= r <= t.end[0] and r not in handled}
        if not rows_long:
            continue
        m = STRING_PREFIX_RE.match(t.string)
        qlen = len(m.group(2)) if m else 3
        fence = False
        example = False
        carry = ""
        inner = [lines[r - 1] for r in range(t.start[0] + 1, t.end[0] + 1)]
        base = min(
            (len(x) - len(x.lstrip(" \t")) for x in inner if x.strip()),
            default=0,
        )
        for r in range(t.start[0], t.end[0] + 1):
            text = lines[r - 1]
            stripped = text.strip()
            if stripped.startswith("```") or stripped.lstrip("\"'rRuU").startswith("```"):
                fence = not fence
                if r in rows_long:
                    res.problems[r] = "docstring code fence"
                continue
            if stripped.startswith(">>>"):
                example = True
            elif not stripped:
                example = False
            if r not in rows_long and not carry:
                continue
            handled.add(r)
            if fence or example or stripped.startswith("..."):
                res.problems[r] = "docstring code example"
                continue
            if r > t.start[0] and _in_literal_block(lines, r, t.start[0], base):
                res.problems[r] = "docstring indented (literal) block"
                continue
            body = text.rstrip("\r\n")
            eol = text[len(body) :]
            indent = re.match(r"[ \t]*", body).group(0)
            if r == t.start[0]:
                indent = " " * base if inner and any(x.strip() for x in inner) else indent
            marker = re.match(r"([-*+]|\d+[.)])\s+", body[len(indent) :])
            hang = indent + " " * len(marker.group(0)) if marker else indent
            tail = len(body) - (t.end[1] - qlen) if r == t.end[0] else 0
            if carry:
                body = indent + carry + " " + body[len(indent) :]
                carry = ""
            # break only at spaces inside the string's text (not the quotes, not the code before)
            lo = t.start[1] + len(m.group(0)) if (m and r == t.start[0]) else 0
            lo = max(lo, len(indent))
            hi = len(body) - tail
            cuts = [
                k
                for k in range(lo + 1, hi)
                if body[k] == " " and body[k - 1] not in " \t\\" and body[k + 1 :].strip()
            ]
            pieces: list[str] = []
            start = 0
            ok = True
            while is_overlong(hang * bool(pieces) + body[start:], width):
                fitting = [
                    k
                    for k in cuts
                    if k > start
                    and str_width(hang * bool(pieces) + body[start:k].rstrip()) <= width
                ]
                if not fitting:
                    ok = False
                    break
                k = fitting[-1]
                pieces.append(hang * bool(pieces) + body[start:k].rstrip())
                start = k
                while start < len(body) and body[start] == " ":
                    start += 1
            pieces.append(hang * bool(pieces) + body[start:])
            if len(pieces) > 1 and r < t.end[0] and _doc_continues(lines[r], hang):
                carry = pieces.pop().strip()
            new = "\n".join(pieces) + eol
            if new != text:
                replace[r] = new
            if not ok:
                res.problems[r] = "docstring line without a space to break at"

    # --- rule 2: trailing comments (the other code lines go to rule 3)
    rule3_rows: list[int] = []
    for row in long_lines:
        if row in handled:
            continue
        if row in in_string:
            tok = in_string[row]
            res.problems[row] = (
                "inside a multi-line string" if tok.start not in docstrings else "docstring"
            )
            continue
        line_toks = [
            t for t in by_line.get(row, []) if t.type not in layout or t.type == tokenize.COMMENT
        ]
        comment = next((t for t in line_toks if t.type == tokenize.COMMENT), None)
        code_toks = [t for t in line_toks if t.type != tokenize.COMMENT]
        text = lines[row - 1]
        eol = text[len(text.rstrip("\r\n")) :]
        if comment is not None and code_toks and not PRAGMA_RE.search(comment.string):
            if not continuation_safe(row):
                res.problems[row] = "trailing comment on a line that continues another"
                continue
            indent = re.match(r"[ \t]*", text).group(0)
            code = text[: comment.start[1]].rstrip()
            cline = indent + comment.string
            new_comment, probs = wrap_comment_block([cline + "\n"], width)
            replace[row] = "".join(new_comment) + code + eol
            for p in probs:
                res.problems.setdefault(row, p)
            continue
        rule3_rows.append(row)

    # --- rule 3: long string literals (a whole implicit concatenation is re-flowed at once)
    edits: list[tuple[tuple[int, int], tuple[int, int], str]] = []
    touched: set[int] = set(replace)
    done_groups: set[int] = set()
    index = {id(t): k for k, t in enumerate(toks)}
    for row in rule3_rows:
        text = lines[row - 1]
        indent_w = str_width(re.match(r"[ \t]*", text).group(0))
        budget = max(width - indent_w - 8, 30)
        strings = [
            t
            for t in by_line.get(row, [])
            if t.type == tokenize.STRING and t.start[0] == t.end[0] and t.start not in docstrings
        ]
        why = None if strings else "no string or comment to shorten"
        fixed = False
        for t in strings:
            if str_width(t.string) <= budget and t.end[1] <= width - 3:
                continue
            k0 = k1 = index[id(t)]
            while k0 > 0 and toks[k0 - 1].type in (tokenize.STRING, tokenize.NL, tokenize.COMMENT):
                k0 -= 1
            while k0 < k1 and toks[k0].type != tokenize.STRING:
                k0 += 1
            while k1 + 1 < len(toks) and toks[k1 + 1].type in (
                tokenize.STRING,
                tokenize.NL,
                tokenize.COMMENT,
            ):
                k1 += 1
            while k1 > k0 and toks[k1].type != tokenize.STRING:
                k1 -= 1
            if k0 in done_groups:
                fixed = True
                continue
            group = toks[k0 : k1 + 1]
            rows = set(range(group[0].start[0], group[-1].end[0] + 1))
            if rows & touched:
                why = why or "left for the next pass"
                continue
            if any(g.type == tokenize.COMMENT for g in group) or any(
                g.start in docstrings or g.start[0] != g.end[0]
                for g in group
                if g.type == tokenize.STRING
            ):
                # cannot re-flow the concatenation: split this literal alone
                if group[0].depth == 0 and len([g for g in group if g.type == tokenize.STRING]) > 1:
                    why = "string in an unbracketed concatenation"
                    continue
                parts = split_string(t.string, budget)
                span = (t.start, t.end)
                paren = group[0].depth == 0
            else:
                g_indent = str_width(re.match(r"[ \t]*", lines[group[0].start[0] - 1]).group(0))
                g_budget = max(width - g_indent - 8, 30)
                group_strings = [g.string for g in group if g.type == tokenize.STRING]
                parts = reflow_strings(group_strings, g_budget)
                span = (group[0].start, group[-1].end)
                if parts is None and len(group_strings) > 1:
                    # quotes or prefixes differ: split the long literals one by one
                    pieces = []
                    for g in group_strings:
                        if str_width(g) > g_budget:
                            pieces += split_string(g, g_budget) or [g]
                        else:
                            pieces.append(g)
                    parts = pieces if pieces != group_strings else None
                prev = toks[k0 - 1] if k0 else None
                paren = group[0].depth == 0 or (
                    prev is not None and prev.type == tokenize.OP and prev.string in (":", "=")
                )
                if parts == group_strings and not paren:
                    # fits its own line, the code before it makes the line long: cut in two
                    parts = split_string(t.string, str_width(t.string) // 2 + 8)
                    if len(group_strings) > 1:
                        parts = None
            if parts is None:
                why = (
                    "f-string replacement field too long"
                    if "{" in t.string and re.match(r"^[rRbBuU]*[fF]", t.string)
                    else "string literal without a space to split at"
                )
                continue
            # one part a line (ruff format would lay them out the same way)
            first_line = lines[span[0][0] - 1]
            line_indent = re.match(r"[ \t]*", first_line).group(0)
            if paren:
                joined = (
                    "(\n"
                    + "".join(line_indent + "    " + p + "\n" for p in parts)
                    + line_indent
                    + ")"
                )
            else:
                at_start = not first_line[: span[0][1]].strip()
                joined = ("\n" + line_indent + ("" if at_start else "    ")).join(parts)
            edits.append((span[0], span[1], joined))
            touched |= rows
            done_groups.add(k0)
            fixed = True
        if not fixed:
            res.problems[row] = why or "strings short enough; the rest of the line is long"

    if not replace and not edits:
        return res
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    for i, new in replace.items():
        edits.append(((i, 0), (i, len(lines[i - 1])), new))
    edits.sort(key=lambda e: e[0], reverse=True)
    out = src
    for (r0, c0), (r1, c1), new in edits:
        out = out[: offsets[r0 - 1] + c0] + new + out[offsets[r1 - 1] + c1 :]
    res.src = out
    return res


# ---------------------------------------------------------------------------------------------
# ruff format


def find_ruff(paths: list[str] = ()) -> str | None:
    """$RUFF, the ruff next to sys.executable, on PATH, or in a .venv above the paths/cwd."""
    if os.environ.get("RUFF"):
        return os.environ["RUFF"]
    here = Path(sys.executable).parent / "ruff"
    if here.exists():
        return str(here)
    found = shutil.which("ruff")
    if found:
        return found
    for start in [*map(Path, paths), Path.cwd()]:
        for folder in [start.resolve(), *start.resolve().parents]:
            candidate = folder / ".venv" / "bin" / "ruff"
            if candidate.exists():
                return str(candidate)
    return None


def ruff_format(src: str, path: Path, ruff: str | None, width: int) -> str:
    if ruff is None:
        return src
    proc = subprocess.run(
        [
            ruff,
            "format",
            "--quiet",
            "--line-length",
            str(width),
            "--stdin-filename",
            str(path.resolve()),
            "-",
        ],
        input=src,
        capture_output=True,
        text=True,
        cwd=path.resolve().parent,
    )
    if proc.returncode != 0:
        print(f"warning: ruff format failed on {path}: {proc.stderr.strip()}", file=sys.stderr)
        return src
    return proc.stdout


# ---------------------------------------------------------------------------------------------


@dataclass
class FileResult:
    changed: bool = False
    before: int = 0
    after: int = 0
    remaining: list[tuple[int, str]] = field(default_factory=list)
    refused: str | None = None


def process(path: Path, width: int, ruff: str | None, write: bool) -> FileResult:
    original = path.read_text(encoding="utf-8")
    out = FileResult()
    out.before = sum(is_overlong(line, width) for line in original.splitlines())
    if out.before == 0:
        return out
    src = original
    result = fix_pass(src, width)
    for _ in range(6):
        if result.src == src:
            break
        src = ruff_format(result.src, path, ruff, width)
        result = fix_pass(src, width)
    else:
        result = fix_pass(src, width)
    out.after = sum(is_overlong(line, width) for line in src.splitlines())
    if src != original:
        try:
            same = normalised_dump(original) == normalised_dump(src)
        except SyntaxError as err:
            same = False
            out.refused = f"rewritten source does not parse: {err}"
        if not same:
            out.refused = out.refused or "AST differs after rewriting"
            out.after = out.before
            out.remaining = []
            src = original
            result = PassResult(original)
            result.problems = dict.fromkeys(
                range(1, original.count("\n") + 2), "file refused (AST mismatch)"
            )
    lines = src.splitlines()
    for i, line in enumerate(lines, 1):
        if is_overlong(line, width):
            out.remaining.append((i, result.problems.get(i, "not handled")))
    if src != original:
        out.changed = True
        if write:
            path.write_text(src, encoding="utf-8")
    return out


def iter_files(paths: list[str]):
    for p in paths:
        path = Path(p)
        if path.is_file():
            if path.suffix == ".py":
                yield path
            continue
        for root, dirs, files in os.walk(path):
            rel = Path(root)
            dirs[:] = sorted(
                d
                for d in dirs
                if d not in SKIP_DIRS
                and not d.startswith(".venv")
                and not (rel / d).as_posix().endswith("docs/api")
            )
            for f in sorted(files):
                if f.endswith(".py"):
                    yield rel / f


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--no-format", action="store_true", help="do not run ruff format")
    ap.add_argument("--check", action="store_true", help="report only, write nothing")
    ap.add_argument("--ruff", help="the ruff executable (default: $RUFF, next to python, PATH)")
    args = ap.parse_args(argv)
    ruff = None if args.no_format else (args.ruff or find_ruff(args.paths))
    if ruff is None and not args.no_format:
        print(
            "warning: ruff not found (give --ruff or $RUFF); the result is not ruff-formatted",
            file=sys.stderr,
        )
    changed = fixed = 0
    remaining: list[str] = []
    refused: list[str] = []
    for path in iter_files(args.paths):
        r = process(path, args.width, ruff, write=not args.check)
        if r.refused:
            refused.append(f"{path}: {r.refused}")
        if r.changed:
            changed += 1
        fixed += max(r.before - r.after, 0)
        remaining += [f"{path}:{line}: {why}" for line, why in r.remaining]
    verb = "would change" if args.check else "changed"
    print(f"files {verb}: {changed}; long lines fixed: {fixed}; left too long: {len(remaining)}")
    for r in refused:
        print(f"REFUSED (left unchanged) {r}")
    for r in remaining:
        print(f"  {r}")
    return 1 if refused or (args.check and changed) else 0


if __name__ == "__main__":
    if hasattr(__import__("signal"), "SIGPIPE"):
        import signal

        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    sys.exit(main())
