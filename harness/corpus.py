"""Real text with no download: a byte-level corpus (vocab 256) and a reference model trained on it.

Quality on random-init weights is noise (docs/techniques.md), so quality metrics need a model that has
learnt something, and held-out text it has not seen. Every Python installation carries its standard
library's source: the corpus is those `.py` files (walked in sorted order, read until a size cap),
or a text file the user names. The text is cut into 8 KiB chunks and every tenth chunk is held out:
deterministic, a tenth held out at any cap, and a larger cap keeps the smaller cap's split as its start.

Both the corpus and the reference model are cached under `cache_dir()` (env HARNESS_CACHE_DIR, else
$XDG_CACHE_HOME/harness, else ~/.cache/harness), keyed by a hash of everything that determines them;
a cache file whose content does not match its key is rebuilt, never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import harness
from harness.models.source import ModelSource

VOCAB_SIZE = 256  # bytes
DEFAULT_MAX_BYTES = 4 * 2**20  # the first 4 MiB of the sorted standard library
CHUNK_BYTES = 8 * 1024
HELDOUT_CHUNK = 9  # of every ten 8 KiB chunks of the text, the tenth is held out
# Installed packages are not the standard library; caches and test data are not source text.
SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
CORPUS_VERSION = 1


def cache_dir() -> Path:
    env = os.environ.get("HARNESS_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "harness" if xdg else Path.home() / ".cache" / "harness"


@dataclass(frozen=True)
class Corpus:
    train: torch.Tensor  # uint8, 1-D
    heldout: torch.Tensor  # uint8, 1-D
    sha256: str  # of the split bytes: identifies the corpus in reference-model keys
    source: str

    def split(self, name: str) -> torch.Tensor:
        if name not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', not {name!r}")
        return self.train if name == "train" else self.heldout


def _walk_sorted(root: Path, rel: str = "") -> Iterator[tuple[str, Path]]:
    """Depth-first, entries sorted by name: a deterministic order that can stop early at the cap."""
    for entry in sorted(os.scandir(root / rel if rel else root), key=lambda e: e.name):
        sub = f"{rel}/{entry.name}" if rel else entry.name
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in SKIP_DIRS:
                yield from _walk_sorted(root, sub)
        elif entry.name.endswith(".py") and entry.is_file():
            yield sub, Path(entry.path)


def stdlib_sources(max_bytes: int) -> list[tuple[str, Path]]:
    """(relative path, path) of the standard library's .py files in sorted order, until `max_bytes`
    (the file that crosses the cap is the last one)."""
    out, total = [], 0
    for rel, p in _walk_sorted(Path(sysconfig.get_paths()["stdlib"])):
        if total >= max_bytes:
            break
        out.append((rel, p))
        total += p.stat().st_size
    return out


def split_chunks(data: bytes) -> tuple[bytes, bytes]:
    """(train, held-out): every tenth CHUNK_BYTES chunk of the text is held out."""
    chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
    held = b"".join(c for i, c in enumerate(chunks) if i % 10 == HELDOUT_CHUNK)
    train = b"".join(c for i, c in enumerate(chunks) if i % 10 != HELDOUT_CHUNK)
    return train, held


def _build(max_bytes: int, text_file: Path | None) -> tuple[bytes, bytes, str]:
    if text_file is not None:
        return (*split_chunks(text_file.read_bytes()), f"file:{text_file}")
    text = b"".join(p.read_bytes() for _, p in stdlib_sources(max_bytes))
    return (*split_chunks(text), f"stdlib:{sysconfig.get_paths()['stdlib']}")


def _corpus_key(max_bytes: int, text_file: Path | None) -> str:
    if text_file is not None:
        st = text_file.stat()
        ident: list[Any] = ["file", str(text_file.resolve()), st.st_size, st.st_mtime_ns]
    else:
        # The installed Python identifies its standard library; walking and stat-ing thousands of files
        # instead cost ~4 MiB of transient Python objects in every case's build phase (a spike the RSS
        # sampler could miss). The cached content's sha256 is still checked on every load.
        stdlib = sysconfig.get_paths()["stdlib"]
        ident = ["stdlib", sys.version, stdlib, Path(stdlib).stat().st_mtime_ns]
    blob = json.dumps([CORPUS_VERSION, max_bytes, CHUNK_BYTES, HELDOUT_CHUNK, ident])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _digest(train: bytes | memoryview, held: bytes | memoryview) -> str:
    # Fed piece by piece from buffers: no concatenated copy. Loading the corpus happens in a case's
    # build phase, where a transient copy of it was a 3.6 MiB spike the RSS sampler could miss.
    h = hashlib.sha256(len(train).to_bytes(8, "little"))
    h.update(train)
    h.update(held)
    return h.hexdigest()


def load_corpus(max_bytes: int = DEFAULT_MAX_BYTES, text_file: str | Path | None = None) -> Corpus:
    """The standard-library corpus (or `text_file`'s bytes), from the cache when it is intact."""
    path = Path(text_file) if text_file is not None else None
    return _load_corpus(cache_dir() / "corpus" / f"{_corpus_key(max_bytes, path)}.pt", max_bytes, path)


@functools.lru_cache(maxsize=4)
def _load_corpus(cache: Path, max_bytes: int, path: Path | None) -> Corpus:
    """Loaded once per process and kept: mapped from the cache file, its pages stay resident for the
    case's life, so loading it is a step up in RSS, not a short spike the sampler could miss."""
    try:
        # mmap: tensors map the cache file instead of being read through a second buffer; in a case's
        # build phase that read copy was a short spike (~3.6 MiB) the RSS sampler could miss.
        blob = torch.load(cache, weights_only=True, mmap=True)
        if blob["sha256"] == _digest(memoryview(blob["train"].numpy()), memoryview(blob["heldout"].numpy())):
            return Corpus(blob["train"], blob["heldout"], blob["sha256"], str(blob["source"]))
    except Exception:  # absent, truncated or tampered with: rebuild from the sources
        pass
    train, held, source = _build(max_bytes, path)
    corpus = Corpus(_as_tensor(train), _as_tensor(held), _digest(train, held), source)
    _atomic_save(
        {"train": corpus.train, "heldout": corpus.heldout, "sha256": corpus.sha256, "source": source}, cache
    )
    return corpus


def _as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    tmp.replace(path)


def corpus_batches(
    n: int, batch_size: int, seq_len: int, split: str = "train", seed: int = 0, corpus: Corpus | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` (inputs, targets) int64 pairs of random windows of the split; targets shifted by one.

    Windows start at positions drawn from torch.Generator(seed): the same seed gives the same batches.
    """
    data = (corpus or load_corpus()).split(split)
    if data.numel() < seq_len + 1:
        raise ValueError(
            f"the corpus's {split} split has {data.numel()} bytes, fewer than the {seq_len + 1} a window "
            f"of {seq_len} tokens needs (reference training uses {REFERENCE_SEQ}; every tenth "
            f"{CHUNK_BYTES // 1024} KiB chunk is held out): give a corpus_text_file of at least "
            f"{10 * CHUNK_BYTES // 1024} KiB"
        )
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.arange(seq_len + 1)
    out = []
    for _ in range(n):
        starts = torch.randint(0, data.numel() - seq_len, (batch_size, 1), generator=gen)
        seq = data[starts + offsets].long()  # (B, T+1)
        out.append((seq[:, :-1].contiguous(), seq[:, 1:].contiguous()))
    return out


# ---- reference model ---------------------------------------------------------------------------------

REFERENCE_BATCH = 8
REFERENCE_SEQ = 128
REFERENCE_LR = 3e-3


def reference_key(cfg: ModelSource, corpus: Corpus, steps: int, seed: int) -> str:
    """Everything that determines the trained weights, hashed (harness version included)."""
    ident = [
        cfg.to_dict(),
        corpus.sha256,
        steps,
        seed,
        REFERENCE_BATCH,
        REFERENCE_SEQ,
        REFERENCE_LR,
        harness.__version__,
    ]
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def reference_path(key: str) -> Path:
    return cache_dir() / "reference" / f"{key}.pt"


def _state_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def train_reference(cfg: ModelSource, corpus: Corpus, steps: int, seed: int) -> dict[str, torch.Tensor]:
    """Train the fp32 model from its seed-`seed` initialisation for `steps` AdamW steps of
    REFERENCE_BATCH x REFERENCE_SEQ windows of the train split; returns its state dict."""
    from harness.models.build import build_module
    from harness.models.transformer import next_token_loss

    if cfg.vocab_size < VOCAB_SIZE:
        raise ValueError(f"a byte corpus needs vocab_size >= {VOCAB_SIZE}; the model has {cfg.vocab_size}")
    seq = min(REFERENCE_SEQ, cfg.max_seq_len)
    torch.manual_seed(seed)
    model = build_module(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=REFERENCE_LR)
    for x, y in corpus_batches(steps, REFERENCE_BATCH, seq, "train", seed, corpus):
        loss = next_token_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def reference_model(
    cfg: ModelSource,
    corpus: Corpus,
    steps: int,
    seed: int = 0,
    verify: bool = True,
    mapped: bool = True,
) -> dict[str, torch.Tensor]:
    """The reference weights for (cfg, corpus, steps, seed): from the cache when its key and checksum
    match, else trained now and cached. `verify=False` skips the checksum (a copy of every tensor): the
    case process passes it because the parent verified the same file just before starting it, and the
    copies would otherwise land in the case's build-phase peak.

    `mapped=False` reads every tensor into its own fresh memory, as a user loads a checkpoint to serve
    it. A case's model must be loaded so: mapped pages of the cache file stay resident (and in RSS)
    after a technique replaces the layer that held them, which made a quantized model look larger than
    the fp32 one it replaced."""
    key = reference_key(cfg, corpus, steps, seed)
    path = reference_path(key)
    try:
        blob = torch.load(path, weights_only=True, mmap=mapped)  # mapped: no read-buffer copy
        if blob["key"] == key and (not verify or blob["sha256"] == _state_digest(blob["state_dict"])):
            return dict(blob["state_dict"])
    except Exception:  # absent or corrupt: retrain
        pass
    state = train_reference(cfg, corpus, steps, seed)
    _atomic_save({"key": key, "sha256": _state_digest(state), "state_dict": state}, path)
    return state
