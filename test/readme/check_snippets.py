#!/usr/bin/env python3
"""Compiles every C++ snippet of a Markdown file, so that the README cannot drift from the API.

usage: check_snippets.py --cxx g++ --include DIR [--flag F]... FILE.md

Every fenced block whose info string is `cpp` (indented blocks too, as in a list item) is a
snippet. Each one is compiled on its own (-std=c++20 -fsyntax-only), with #line directives,
so that an error points at the line of FILE.md.

The convention:
  - A snippet with nothing in front of it is compiled as it is: it must be a whole
    translation unit, with its own #include lines. Make the first snippets of a page so: a
    reader copies them as they are.
  - A snippet that is a fragment (statements, or code that uses names defined elsewhere)
    has, just above its fence (blank lines between are allowed), an HTML comment that
    GitHub does not show:

        <!-- snippet
        #include <rill/rill.hpp>
        int process(int v);
        void example() {
        SNIPPET
        }
        -->

    Its lines are the frame: the translation unit to compile, with the line that holds only
    SNIPPET replaced by the snippet. Keep frames short: declarations, not definitions.

Exit status: 0 when every snippet compiles, 1 otherwise (each failure is printed with its
compiler output).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

FENCE = re.compile(r"^(\s*)```\s*(\S*)\s*$")
FRAME_OPEN = re.compile(r"^\s*<!--\s*snippet\s*$")
FRAME_CLOSE = re.compile(r"^\s*-->\s*$")
PLACEHOLDER = "SNIPPET"


def is_closing_fence(line):
    m = FENCE.match(line)
    return m is not None and not m.group(2)


def snippets(lines):
    """Yields (first line number of the code, code lines, frame lines or None)."""
    frame = None  # the last frame seen, until a fence or other text
    i = 0
    while i < len(lines):
        line = lines[i]
        if FRAME_OPEN.match(line):
            body = []
            i += 1
            while i < len(lines) and not FRAME_CLOSE.match(lines[i]):
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise SystemExit(f"line {i}: a snippet frame is not closed with -->")
            if not any(l.strip() == PLACEHOLDER for l in body):
                raise SystemExit(f"line {i}: a snippet frame has no {PLACEHOLDER} line")
            frame = body
            i += 1
            continue
        m = FENCE.match(line)
        if m:
            indent, lang = m.group(1), m.group(2)
            start = i + 1
            i += 1
            code = []
            while i < len(lines) and not is_closing_fence(lines[i]):
                code.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
                i += 1
            if lang == "cpp":
                yield start + 1, code, frame  # +1: line numbers count from 1
            frame = None
            i += 1
            continue
        if line.strip():
            frame = None  # a frame belongs to the fence right below it
        i += 1


def translation_unit(path, first_line, code, frame):
    name = os.path.abspath(path)
    snippet = [f'#line {first_line} "{name}"'] + code
    if frame is None:
        return "\n".join(snippet) + "\n"
    out = ['#line 1 "<snippet frame>"']
    for line in frame:
        if line.strip() == PLACEHOLDER:
            out += snippet
            out.append('#line 1 "<snippet frame>"')
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxx", required=True)
    ap.add_argument("--include", action="append", default=[])
    ap.add_argument("--flag", action="append", default=[])
    ap.add_argument("markdown")
    args = ap.parse_args()
    with open(args.markdown, encoding="utf-8") as f:
        lines = f.read().split("\n")
    found = list(snippets(lines))
    if not found:
        print(f"{args.markdown}: no cpp snippet found")
        return 1
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for n, (first, code, frame) in enumerate(found):
            src = os.path.join(tmp, f"snippet{n}.cpp")
            with open(src, "w", encoding="utf-8") as f:
                f.write(translation_unit(args.markdown, first, code, frame))
            cmd = [args.cxx, "-std=c++20", "-fsyntax-only"]
            cmd += [f"-I{d}" for d in args.include] + args.flag + [src]
            r = subprocess.run(cmd, capture_output=True, text=True)
            where = f"{args.markdown}:{first}"
            if r.returncode != 0:
                failed += 1
                print(f"FAILED: the snippet at {where} does not compile:\n{r.stdout}{r.stderr}")
            else:
                print(f"ok: the snippet at {where}")
    print(f"{len(found) - failed} of {len(found)} snippets compile")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
