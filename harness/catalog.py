"""`harness sizes` and `harness techniques`: what a suite can name, one line each.

The lines come from the code itself (the size table, each technique's docstring and Config), so the
listing cannot drift from what `harness validate` accepts.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from harness.errors import EXIT_OK

LINE_CHARS = 110


def first_sentence(doc: str | None) -> str:
    """The docstring's first sentence (its first paragraph, unwrapped, up to the first full stop)."""
    if not doc:
        return "(no documentation)"
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    # A sentence ends at a full stop before a space, but not at "et al." or "e.g.".
    m = re.search(r"(?<!\bal)(?<!e\.g)(?<!i\.e)\.(\s|$)", paragraph)
    sentence = paragraph[: m.start() + 1] if m else paragraph
    if len(sentence) <= LINE_CHARS:
        return sentence
    # Too long for one line: stop at the last clause break that fits.
    cut = max(sentence.rfind(sep, 0, LINE_CHARS) for sep in (": ", "; ", ", ", " ("))
    return sentence[: cut if cut > 0 else LINE_CHARS] + " ..."


def size_lines() -> list[str]:
    from harness.models.config import SIZES, count_params

    lines = []
    for name, cfg in SIZES.items():
        tied = count_params(cfg.replace(tie_embeddings=True))
        shape = (
            f"{cfg.n_layers} layers x d_model {cfg.d_model}, {cfg.n_heads} heads, d_ff {cfg.d_ff}, "
            f"vocab {cfg.vocab_size}, max_seq_len {cfg.max_seq_len}, {cfg.activation}"
        )
        params = f"{count_params(cfg) / 1e6:,.1f} M params ({tied / 1e6:,.1f} M tied)"
        lines.append(f"{name:<12} {params:<34} {shape}")
    return lines


def technique_lines() -> list[str]:
    from harness import techniques as techreg

    lines = []
    for name in techreg.names():
        cls: Any = techreg.get(name)
        kinds = _kinds(cls)
        lines.append(f"{name:<26} [{kinds}] {first_sentence(cls.__doc__)}")
    return lines


def _kinds(cls: Any) -> str:
    """The workloads a technique applies to: its own kind list, or what its `needs_training` trait says."""
    if getattr(cls, "workloads", None):
        return "/".join(sorted(cls.workloads))
    needs = getattr(cls, "needs_training", None)
    return "any" if needs is None else ("training workloads" if needs else "non-training workloads")


def cmd_sizes(args: argparse.Namespace) -> int:
    print("size         parameters                         shape  (any field may be overridden in the suite)")
    for line in size_lines():
        print(line)
    return EXIT_OK


def cmd_techniques(args: argparse.Namespace) -> int:
    print("technique                  [workloads] what it does  (options: see its Config in the source)")
    for line in technique_lines():
        print(line)
    return EXIT_OK


def add_commands(sub: Any) -> None:
    s = sub.add_parser("sizes", help="the model sizes a suite can name, with their shapes")
    s.set_defaults(func=cmd_sizes)
    t = sub.add_parser("techniques", help="the techniques a suite can name, one line each")
    t.set_defaults(func=cmd_techniques)
