"""Exact and near-duplicate detection for texts, in time linear in their number.

Near duplicates are texts whose character 5-gram sets (of the normalized text) have a Jaccard similarity of
THRESHOLD or more. datasketch computes each text's MinHash signature (PERMUTATIONS values); texts whose
signatures agree on every row of one of BANDS bands are candidates, and a candidate pair counts when its
signatures' agreement (the Jaccard estimate) reaches THRESHOLD. Two ways in:

- `NearDuplicateIndex`: texts one at a time, each checked against those kept (generation: thousands).
- `near_duplicates`: a whole file's signatures at once, banded by sorting numpy columns, so memory is a
  few arrays of N numbers (input files: millions); signatures and band keys wait on disk meanwhile, and
  are read a window or a band at a time.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import zlib
from array import array
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from distillc.data.normalize import exact_key, normalize

SHINGLE = 5
THRESHOLD = 0.6
PERMUTATIONS = 128
BANDS = 32  # of 4 rows: a pair at Jaccard 0.6 shares a band with probability 0.988, at 0.3 with 0.23
ROWS = PERMUTATIONS // BANDS
CHUNK = 65_536  # candidate pairs compared at once (2 x 32 MB of signatures)
WINDOW = 32 * 2**20  # bytes of the signature file mapped at once
WORKERS = min(os.cpu_count() or 1, 8)  # processes signing texts, past the first chunk
MARGIN = 0.15  # a candidate's signature agreement may fall this far below THRESHOLD (3.5 sd at 128 rows)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: mixes a band's two halves into one key


def shingles(text: str) -> set[bytes]:
    norm = normalize(text).encode("utf-8")
    if len(norm) <= SHINGLE:
        return {norm}
    return {norm[i : i + SHINGLE] for i in range(len(norm) - SHINGLE + 1)}


def jaccard(a: set[bytes], b: set[bytes]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def signatures(texts: list[str]) -> np.ndarray:
    """(len(texts), PERMUTATIONS) uint32: each text's MinHash signature over its shingles."""
    from datasketch import MinHash

    if not texts:
        return np.zeros((0, PERMUTATIONS), dtype=np.uint32)
    # crc32 (C, 32 bits) hashes a 5-byte shingle 2.7x faster than datasketch's default sha1; datasketch mixes
    # each value (murmur3's fmix) before its permutations, so the signature's quality is the same.
    hashes = MinHash.bulk([shingles(t) for t in texts], num_perm=PERMUTATIONS, hashfunc=zlib.crc32)
    return np.stack([h.hashvalues for h in hashes]).astype(np.uint32)


def band_keys(sigs: np.ndarray) -> np.ndarray:
    """(BANDS, n) uint64, band by band: one key per band and text, equal for two texts exactly when their
    band's rows are."""
    rows = sigs.astype(np.uint64).reshape(len(sigs), BANDS, ROWS)
    low = rows[:, :, 0] | (rows[:, :, 1] << np.uint64(32))
    high = rows[:, :, 2] | (rows[:, :, 3] << np.uint64(32))
    return np.ascontiguousarray((low ^ (high * _MIX)).T)


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The Jaccard estimate of signature pairs: the share of rows where they agree."""
    return (a == b).mean(axis=-1)


class NearDuplicateIndex:
    """Add texts one by one; each is rejected when it duplicates, or nearly duplicates, one already kept.
    Candidates come from the bands, as in `near_duplicates`, and are confirmed on their shingles."""

    def __init__(self, dedup: str = "near", threshold: float = THRESHOLD) -> None:
        self.dedup = dedup  # near | exact | off, as inputs.dedup
        self.threshold = threshold
        self.exact: set[bytes] = set()
        self.kept: list[tuple[np.ndarray, set[bytes]]] = []
        self.buckets: dict[tuple[int, int], list[int]] = defaultdict(list)

    def check(self, text: str) -> str:
        """ "" when `text` is new, else "duplicate" or "near-duplicate"."""
        if self.dedup == "off":
            return ""
        if exact_key(text) in self.exact:
            return "duplicate"
        if self.dedup == "exact":
            return ""
        sig, grams = signatures([text])[0], shingles(text)
        seen: set[int] = set()
        for band, key in enumerate(band_keys(sig[None])[:, 0].tolist()):
            for other in self.buckets.get((band, key), ()):
                if other in seen:
                    continue
                seen.add(other)
                other_sig, other_grams = self.kept[other]
                if similarity(sig, other_sig) >= self.threshold - MARGIN and (
                    jaccard(grams, other_grams) >= self.threshold
                ):
                    return "near-duplicate"
        return ""

    def add(self, text: str) -> None:
        sig = signatures([text])[0]
        self.exact.add(exact_key(text))
        for band, key in enumerate(band_keys(sig[None])[:, 0].tolist()):
            self.buckets[(band, key)].append(len(self.kept))
        self.kept.append((sig, shingles(text)))


class TextStore:
    """Texts appended in chunks to files in `folder`, with (when `signed`) their MinHash signatures and band
    keys: memory holds 8 bytes of offset per text, however many there are; `arrays` maps the rest."""

    def __init__(self, folder: Path, signed: bool) -> None:
        self.folder, self.signed = folder, signed
        self._texts = (folder / "texts.bin").open("w+b")
        self._sigs = (folder / "signatures.u32").open("w+b")  # read back a window at a time
        self._bands = [(folder / f"band{b}.u64").open("wb") for b in range(BANDS)]  # a band is read whole
        self._offsets = array("Q", [0])
        self._pool: ProcessPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def extend(self, texts: Iterable[str], chunk: int = 10_000) -> int:
        """Append `texts`; returns how many there were. From the second chunk on, signatures are computed in
        worker processes (one per CPU) while this one reads on, and written back in order."""
        added = 0
        signing: deque[Future[np.ndarray]] = deque()
        items = iter(texts)
        while batch := list(islice(items, chunk)):
            data = [t.encode("utf-8") for t in batch]
            self._texts.seek(0, 2)
            self._texts.write(b"".join(data))
            for item in data:
                self._offsets.append(self._offsets[-1] + len(item))
            if self.signed and (added or signing) and (pool := self._workers()) is not None:
                signing.append(pool.submit(signatures, batch))
                while len(signing) > 2 * WORKERS:  # chunks in flight: memory stays bounded
                    self._write(signing.popleft().result())
            elif self.signed:
                self._write(signatures(batch))
            added += len(batch)
        while signing:
            self._write(signing.popleft().result())
        return added

    def _workers(self) -> ProcessPoolExecutor | None:
        if self._pool is None and WORKERS > 1:
            # spawn, not fork: the build's process may hold threads (HTTP, tokenizers) a fork would copy
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=WORKERS, mp_context=context)
        return self._pool

    def _write(self, sigs: np.ndarray) -> None:
        self._sigs.write(sigs.tobytes())
        for band, keys in zip(self._bands, band_keys(sigs), strict=True):
            band.write(keys.tobytes())

    def text(self, row: int) -> str:
        self._texts.seek(self._offsets[row])
        return self._texts.read(self._offsets[row + 1] - self._offsets[row]).decode("utf-8")

    def arrays(self) -> tuple[SignatureFile, list[BandFile]]:
        """(signatures, band keys band by band) of every text so far, on disk, each read when asked for."""
        for f in (self._sigs, *self._bands):
            f.flush()
        n = len(self)
        return SignatureFile(self._sigs.fileno(), n), [BandFile(Path(f.name), n) for f in self._bands]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        for f in (self._texts, self._sigs, *self._bands):
            f.close()


@dataclass(frozen=True)
class SignatureFile:
    """The signatures in a file, `sigs[rows]` gathered a WINDOW of the file at a time, each window mapped and
    unmapped in turn. A map of the whole file kept the pages that candidate reads touched (the kernel maps
    16 pages around each one): at a million rows, every page of its 512 MB."""

    fileno: int
    rows: int

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        found = np.empty((len(rows), PERMUTATIONS), dtype=np.uint32)
        order = np.argsort(rows, kind="stable")
        ranked = rows[order]
        per_window = WINDOW // (PERMUTATIONS * 4)  # a window starts on a page: WINDOW is a multiple of 4096
        edges = np.searchsorted(ranked, np.arange(0, self.rows + per_window, per_window))
        for window, (a, b) in enumerate(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True)):
            if a == b:
                continue
            first = window * per_window
            count = min(per_window, self.rows - first)
            with mmap.mmap(
                self.fileno, count * PERMUTATIONS * 4, offset=first * PERMUTATIONS * 4, access=mmap.ACCESS_READ
            ) as view:
                block = np.frombuffer(view, dtype=np.uint32).reshape(count, PERMUTATIONS)
                found[order[a:b]] = block[ranked[a:b] - first]
                del block  # the map cannot close while an array reads it
        return found

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        return self[np.arange(self.rows)]


@dataclass(frozen=True)
class BandFile:
    """One band's keys on disk, read whole when asked for (np.asarray) into memory freed after the band: mapped
    (np.memmap), every band's pages stayed in the process, 256 MB at a million rows."""

    path: Path
    rows: int

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        return np.fromfile(self.path, dtype=np.uint64, count=self.rows)

    def __len__(self) -> int:
        return self.rows


@dataclass(frozen=True)
class Duplicates:
    """Rows dropped as near duplicates of an earlier row: dropped[i] is a near duplicate of like[i]."""

    dropped: np.ndarray  # row numbers, ascending
    like: np.ndarray  # for each, the earlier row it resembles
    similarity: np.ndarray  # their Jaccard similarity


NO_DUPLICATES = Duplicates(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def near_duplicates(
    sigs: np.ndarray | SignatureFile,
    bands: Sequence[np.ndarray | BandFile],
    text: Callable[[int], str],
    threshold: float = THRESHOLD,
) -> Duplicates:
    """Every row that nearly duplicates an earlier one (candidates as `_close_pairs` finds them), confirmed on
    its texts (`text`: row -> text) by the exact Jaccard similarity. Memory: a few arrays of n numbers."""
    n = len(sigs)
    like = np.full(n, n, dtype=np.int64)  # the earliest row each row was found to resemble (n: none)
    score = np.zeros(n, dtype=np.float32)
    wanted = lambda rows, others: others < like[rows]  # noqa: E731 - not yet found like this row, or an earlier one
    for rows, others in _close_pairs(sigs, bands, threshold, wanted):
        for row, other in zip(rows, others, strict=True):
            if other < like[row] and (sim := jaccard(shingles(text(row)), shingles(text(other)))) >= threshold:
                like[row], score[row] = other, sim
    dropped = np.flatnonzero(like < n)
    return Duplicates(dropped, like[dropped], score[dropped])


def near_groups(
    sigs: np.ndarray | SignatureFile,
    bands: Sequence[np.ndarray | BandFile],
    text: Callable[[int], str],
    threshold: float = THRESHOLD,
) -> np.ndarray:
    """For each row, the first row of its group: the rows joined to it by near-duplicate pairs, directly or
    through other rows (union-find over the confirmed pairs). Memory: a few arrays of n numbers."""
    parent = np.arange(len(sigs), dtype=np.int64)

    def root(row: int) -> int:
        while parent[row] != row:
            parent[row] = parent[parent[row]]  # path halving
            row = int(parent[row])
        return row

    def roots(rows: np.ndarray) -> np.ndarray:
        found = parent[rows]
        while not np.array_equal(ahead := parent[found], found):
            found = ahead
        return found

    wanted = lambda rows, others: roots(rows) != roots(others)  # noqa: E731 - pairs already joined are skipped
    for rows, others in _close_pairs(sigs, bands, threshold, wanted):
        for row, other in zip(rows, others, strict=True):
            a, b = root(row), root(other)
            if a != b and jaccard(shingles(text(row)), shingles(text(other))) >= threshold:
                parent[max(a, b)] = min(a, b)  # the first row of a group is its root
    return roots(np.arange(len(sigs), dtype=np.int64))


def _close_pairs(
    sigs: np.ndarray | SignatureFile,
    bands: Sequence[np.ndarray | BandFile],
    threshold: float,
    wanted: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> Iterator[tuple[list[int], list[int]]]:
    """(rows, earlier rows) of candidate pairs, CHUNK at a time. Band by band, rows are sorted by key; within a
    run of equal keys each row is a candidate against the run's first row and the row just before it. Of the
    pairs `wanted` keeps, those whose signatures agree on at least `threshold` - MARGIN of their rows are
    yielded."""
    n = len(sigs)
    for band in range(len(bands) if n else 0):
        column = np.asarray(bands[band])
        order = np.argsort(column, kind="stable")  # equal keys stay in row order: the earliest comes first
        ranked = column[order]
        continues = np.flatnonzero(ranked[1:] == ranked[:-1]) + 1  # sorted positions inside a run
        if not len(continues):
            continue
        starts = np.flatnonzero(np.concatenate(([True], ranked[1:] != ranked[:-1])))
        run_first = starts[np.searchsorted(starts, continues, side="right") - 1]
        later = order[continues]
        for earlier in (order[run_first], order[continues - 1]):
            for at in range(0, len(later), CHUNK):
                rows, others = later[at : at + CHUNK], earlier[at : at + CHUNK]
                keep = wanted(rows, others)
                rows, others = rows[keep], others[keep]
                close = similarity(sigs[rows], sigs[others]) >= threshold - MARGIN
                yield rows[close].tolist(), others[close].tolist()


def kept_after_dedup(store: TextStore, texts: Iterator[str], limit: int, near: bool) -> Duplicates:
    """Read `texts` into `store` until `limit` of them (all, for 0) are left once near duplicates are
    dropped: each round reads what the last one dropped, and the whole store is checked again."""
    found = NO_DUPLICATES
    while store.extend(islice(texts, limit - (len(store) - len(found.dropped)) if limit else None)):
        if near:
            sigs, bands = store.arrays()
            found = near_duplicates(sigs, bands, store.text)
        if not limit or len(store) - len(found.dropped) >= limit:
            break
    return found
