"""Plugins of the media example pipeline (``pipeline.yaml``), referred to as ``plugins:NAME``.

Every step does real work on real files: ``generate`` writes a batch of documents, "videos"
(deterministic random bytes) and subtitles into ``<workdir>/<run id>/files``; the branches hash
them, count words, parse subtitles and draw a thumbnail (a byte histogram as a PGM image); a
grouped merge joins the branches per original file; ``report`` writes ``report.json``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

from interlock import Output, TaskInput

WORDS = (
    "orchestration", "kernel", "task", "node", "artifact", "origin", "filter", "binding",
    "expression", "pipeline", "worker", "store", "queue", "claim", "lease", "retry",
    "generation", "barrier", "fan", "group", "merge", "report", "media", "frame", "subtitle",
    "video", "document", "hash", "thumbnail", "histogram",
)
KINDS = ("text", "video", "subtitle")
EXTENSIONS = {"text": ".txt", "video": ".bin", "subtitle": ".srt"}
_TIME = re.compile(r"(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)")


def run_dir(task: TaskInput) -> Path:
    """``<workdir>/<run id>``: every file of one run lives there."""
    return Path(str(task.bindings.get("workdir") or "media-out")).resolve() / task.run_id


def _only(task: TaskInput, slug: str) -> Any:
    (artifact,) = task.inputs[slug]
    return artifact


def generate(task: TaskInput) -> list[Output]:
    """Root: write ``count`` files (kinds in rotation) and emit one artifact per file."""
    count = int(task.bindings.get("count") or 12)
    rng = random.Random(int(task.bindings.get("seed") or 7))
    folder = run_dir(task) / "files"
    folder.mkdir(parents=True, exist_ok=True)
    outputs = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        path = folder / f"{kind}-{i:04d}{EXTENSIONS[kind]}"
        if kind == "text":
            words = [rng.choice(WORDS) for _ in range(rng.randint(40, 400))]
            lines = [" ".join(words[k:k + 12]) for k in range(0, len(words), 12)]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        elif kind == "video":
            path.write_bytes(rng.randbytes(rng.randint(4, 64) * 1024))
        else:
            cues, start = [], 0
            for cue in range(1, rng.randint(3, 12) + 1):
                start += rng.randint(500, 4000)
                end = start + rng.randint(800, 3000)
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9)))
                cues.append(f"{cue}\n{_stamp(start)} --> {_stamp(end)}\n{text}\n")
                start = end
            path.write_text("\n".join(cues), encoding="utf-8")
        outputs.append(Output(
            id=path.name,
            fields={"kind": kind, "name": path.name, "path": str(path),
                    "bytes": path.stat().st_size},
            data={"path": str(path)},
        ))
    return outputs


def sha256(task: TaskInput) -> list[Output]:
    """Every file: its SHA-256 (streamed in 64 KiB blocks)."""
    source = _only(task, "source")
    digest = hashlib.sha256()
    with open(source.data["path"], "rb") as handle:
        for block in iter(lambda: handle.read(65536), b""):
            digest.update(block)
    return [Output(fields={"name": task.bindings["file_name"], "kind": source.fields["kind"],
                           "sha256": digest.hexdigest(), "bytes": source.fields["bytes"]})]


def wordcount(task: TaskInput) -> list[Output]:
    """Documents: words, lines and distinct words."""
    source = _only(task, "source")
    text = Path(source.data["path"]).read_text(encoding="utf-8")
    words = text.split()
    return [Output(fields={"name": source.fields["name"], "words": len(words),
                           "lines": text.count("\n"), "distinct_words": len(set(words))})]


def subtitles(task: TaskInput) -> list[Output]:
    """Subtitles: cue count, spoken words and the end time of the last cue."""
    source = _only(task, "source")
    text = Path(source.data["path"]).read_text(encoding="utf-8")
    cues, words, end_ms = 0, 0, 0
    for block in text.strip().split("\n\n"):
        lines = block.strip().splitlines()
        match = _TIME.match(lines[1]) if len(lines) > 1 else None
        if match is None:
            continue
        cues += 1
        h, m, s, ms = (int(g) for g in match.groups()[4:])
        end_ms = max(end_ms, ((h * 60 + m) * 60 + s) * 1000 + ms)
        words += sum(len(line.split()) for line in lines[2:])
    return [Output(fields={"name": source.fields["name"], "cues": cues, "words": words,
                           "duration_seconds": end_ms / 1000})]


def thumbnail(task: TaskInput) -> list[Output]:
    """Videos: a 'thumbnail' — the byte histogram downsampled to 32 bins, drawn as a 32x16 PGM
    image next to the file — plus the histogram's peak bin."""
    source = _only(task, "source")
    data = Path(source.data["path"]).read_bytes()
    bins = [0] * 32
    for byte in data:
        bins[byte >> 3] += 1
    top = max(bins) or 1
    height = 16
    rows = [" ".join("255" if bins[x] * height >= (height - y) * top else "0"
                     for x in range(32)) for y in range(height)]
    path = Path(source.data["path"]).with_suffix(".thumb.pgm")
    path.write_text(f"P2\n32 {height}\n255\n" + "\n".join(rows) + "\n", encoding="ascii")
    fields: dict[str, Any] = {"name": source.fields["name"], "thumbnail": str(path),
                              "peak_bin": bins.index(max(bins))}
    if "note" in task.bindings:
        fields["note"] = task.bindings["note"]
    return [Output(fields=fields, data={"thumbnail": str(path)})]


def merge(task: TaskInput) -> list[Output]:
    """Grouped by original file: the hash joined with whatever its kind's branch found."""
    merged: dict[str, Any] = {"label": task.bindings.get("label")}
    for slug in ("hash", "wordcount", "subtitles", "thumbnail"):
        for artifact in task.inputs.get(slug, []):
            merged.update(artifact.fields)
    return [Output(fields=merged)]


def report(task: TaskInput) -> list[Output]:
    """Aggregate: write ``report.json`` (files sorted by name, totals per kind)."""
    files = sorted((dict(a.fields) for a in task.inputs.get("merge", [])),
                   key=lambda f: str(f.get("name")))
    by_kind: dict[str, int] = {}
    for entry in files:
        by_kind[str(entry.get("kind"))] = by_kind.get(str(entry.get("kind")), 0) + 1
    body = {
        "title": task.bindings.get("title"),
        "run_id": task.run_id,
        "files": files,
        "totals": {
            "files": len(files),
            "bytes": sum(int(f.get("bytes", 0)) for f in files),
            "words": sum(int(f.get("words", 0)) for f in files),
            "by_kind": dict(sorted(by_kind.items())),
        },
    }
    path = run_dir(task) / "report.json"
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [Output(id="report", fields={"report": str(path), "files": len(files)},
                   data={"path": str(path)})]


def _stamp(ms: int) -> str:
    seconds, ms = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d},{ms:03d}"
