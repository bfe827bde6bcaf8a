"""Summarize a ``py-spy record --format raw`` file (collapsed stacks): where the samples are.

``python -m bench.pyspy_summary FILE [--top 30] [--match TEXT]``

Prints the functions with the most samples *inclusive* (anywhere on the stack) and *self* (at the
top of the stack). Idle samples (the event loop waiting in ``select``/``epoll``) are counted apart,
so the percentages are of the time the process was busy. ``--match`` keeps only stacks that
contain TEXT (e.g. ``instance_webhook`` for one route).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_IDLE = re.compile(r"\b(select|poll|epoll|_run_once \(asyncio|run_forever)\b")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``func (module.py)``: lines merged."""
    found = _FRAME.match(frame)
    if not found:
        return frame
    path = found["file"]
    for marker in ("site-packages/", "/src/", "/bench/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{found['func']} ({path})"


def summarize(path: Path, top: int, match: str | None) -> str:
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [short(f) for f in stack.split(";")]
        if match and not any(match in f for f in frames):
            continue
        leaf = frames[-1]
        waiting = leaf.startswith(("select (", "poll (", "epoll", "Condition.wait", "_worker ("))
        if waiting or "selectors.py" in leaf:
            idle += n
            continue
        total += n
        self_time[leaf] += n
        for frame in set(frames):
            inclusive[frame] += n
    out = [f"{path.name}: {total} busy samples, {idle} idle"]
    out.append("\ninclusive (busy %):")
    for frame, n in inclusive.most_common(top):
        out.append(f"  {100 * n / max(1, total):5.1f}%  {frame}")
    out.append("\nself (busy %):")
    for frame, n in self_time.most_common(top):
        out.append(f"  {100 * n / max(1, total):5.1f}%  {frame}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--match")
    args = parser.parse_args()
    print(summarize(args.file, args.top, args.match))


if __name__ == "__main__":
    main()
