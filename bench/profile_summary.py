"""Summarises py-spy ``raw`` (collapsed stack) files: top functions by self and by inclusive samples."""
from __future__ import annotations

import argparse
import re
from collections import Counter

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _where(frame: str, root_hint: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in (root_hint, "site-packages/", "python3.11/"):
        if marker and marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def summarise(paths: list[str], top: int = 25, root_hint: str = "bench-code-") -> list[str]:
    """Lines of text: total samples, then the ``top`` functions by self and by inclusive share."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                match = _LINE.match(line.rstrip("\n"))
                if not match:
                    continue
                count = int(match["count"])
                frames = [_where(f, root_hint) for f in match["stack"].split(";") if f]
                frames = [re.sub(r"^[^/ ]*/", "", f) if f.startswith("bench-code-") else f for f in frames]
                if not frames:
                    continue
                total += count
                own[frames[-1]] += count
                for frame in set(frames):
                    inclusive[frame] += count
    out = [f"{total} samples", "", "self:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)] if total else []
    out += ["", "inclusive:"]
    out += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top)] if total else []
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print("\n".join(summarise(args.files, args.top)))


if __name__ == "__main__":
    main()
