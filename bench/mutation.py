"""Mutation testing: break the product one line at a time and see whether the fast tests notice.

    python bench/mutation.py [--only MODULE] [--match TEXT] [--timeout S] [--postgresql]
    python bench/mutation.py --check     # only check that every mutant still finds its line (seconds)

Each mutant is one line a developer could plausibly get wrong in the modules where that changes what a
user sees: ranking and re-ranking, access control, ingest and duplicate detection, the change feed, the
vector stores (FAISS and Milvus), filters. It is applied in a temporary copy of the tree (the checkout is
never touched), the fast tests of its module run there (`-x`, stop at the first failure), and the mutant is
*killed* when they fail or time out.

A mutant finds its code by a snippet that must occur exactly once in the whole of app/, index/ and models/,
not by a file name, so it survives modules being moved or split. When a snippet is gone or occurs twice
(its code was rewritten, or copied), the bench lists every such mutant and exits with status 2 before
running anything: refresh those snippets, then run it again. `--check` does only that.

Why a curated list rather than mutmut 3.8 (installed): mutmut mutates every operator and constant of a
module (hundreds of mutants for reranking.py alone) and runs its own copy of the whole test collection;
on 2 shared cores that does not fit in 30 minutes, and most of its mutants (a log message, a docstring
constant) change nothing a user sees. Each mutant here says what a user would see, so a survivor is a
concrete gap, and each runs only the tests of its module.

Baseline first: the selected tests must pass on the unmutated copy, or nothing is measured; a mutant's
test run may take at most a few times its module's baseline (a mutant that hangs the product is killed by
that limit). The PostgreSQL variants of the tests run only with ``--postgresql`` (and
CBIR_TEST_POSTGRES_URL); mutants that only PostgreSQL can show are skipped without it. Output: one line per
mutant, the kill rate per module, the survivors (those known to be equivalent marked with why), and a final
JSON line {"killed_ratio": ..., "modules": {...}, "survivors": [...]}; killed_ratio counts only the
non-equivalent mutants that ran.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEARCHED = ("app", "index", "models")  # where a mutant's snippet is looked for


@dataclass(frozen=True)
class Mutant:
    module: str  # the group it is reported under
    original: str  # must occur exactly once in SEARCHED
    mutated: str
    reason: str  # what a user would see
    equivalent: str | None = None  # why it cannot change what a user sees, if it cannot
    postgresql: bool = False  # only PostgreSQL can show it: run with --postgresql


# The fast tests each module's mutants run against, those most likely to fail first.
TESTS: dict[str, list[str]] = {
    "ranking": [
        "tests/app/test_ranking.py",
        "tests/app/search/test_reranking.py",
        "tests/app/test_search_sources.py",
    ],
    "access": ["tests/app/test_access_matrix.py", "tests/app/test_auth.py"],
    "ingest": [
        "tests/app/jobs/test_bulk.py",
        "tests/app/collection/test_collection.py",
        "tests/app/test_ranking.py",
        "tests/app/test_duplicate_threshold.py",
    ],
    "change_feed": [
        "tests/app/collection/test_following.py",
        "tests/app/collection/test_feed_commits.py",
        "tests/app/collection/test_feed_shared_store.py",
    ],
    "vector_store": ["tests/index"],
    "milvus": ["tests/index/test_milvus_store.py", "tests/index/test_stores.py"],
    "filters": ["tests/app/collection/test_filter_semantics.py", "tests/app/test_catalog.py"],
}

MUTANTS: list[Mutant] = [
    # -- ranking and re-ranking ------------------------------------------------------------------------------
    Mutant(
        "ranking",
        'order = np.argsort(-candidate_scores, axis=1, kind="stable")',
        'order = np.argsort(candidate_scores, axis=1, kind="stable")',
        "re-ranked results come back worst-first after the first",
    ),
    Mutant(
        "ranking",
        'queries = _unit_rows(queries + np.einsum("qn,qnd->qd", weights, top_vectors))',
        'queries = queries + np.einsum("qn,qnd->qd", weights, top_vectors)',
        "the expanded query is not L2-normalised: scores far above 1",
    ),
    Mutant(
        "ranking",
        'top = np.argsort(-candidate_scores, axis=1, kind="stable")[:, : options.query_expansion]',
        'top = np.argsort(candidate_scores, axis=1, kind="stable")[:, : options.query_expansion]',
        "query expansion averages in the least similar candidates",
    ),
    Mutant(
        "ranking",
        "exact = np.take_along_axis(plain_scores(candidates, vectors), order, axis=1) >= _EXACT_COPY",
        "exact = np.take_along_axis(plain_scores(candidates, vectors), order, axis=1) <= _EXACT_COPY",
        "every hit but the copy is treated as an exact copy of the query",
    ),
    Mutant(
        "ranking",
        "np.take_along_axis(exact, first, axis=1), 1.0,",
        "np.take_along_axis(exact, first, axis=1), 0.5,",
        "an exact copy of the query scores 0.5",
    ),
    Mutant(
        "ranking",
        "return (sums / np.maximum(norms, 1e-12)).astype(np.float32)",
        "return sums.astype(np.float32)",
        "database-side augmented vectors are not normalised: DBA scores above 1",
    ),
    Mutant(
        "ranking",
        "return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)",
        "return vectors.astype(np.float32)",
        "_unit_rows normalises nothing",
    ),
    Mutant(
        "ranking",
        "if not options.active:",
        "if options.active:",
        "re-ranking runs when switched off and is skipped when on",
    ),
    Mutant(
        "ranking",
        "return np.where(candidates >= 0, out, -np.inf).astype(np.float32)",
        "return np.where(candidates >= 0, -out, -np.inf).astype(np.float32)",
        "re-ranking scores are negated: the least similar first",
    ),
    Mutant(
        "ranking",
        "for s, i, n, p in zip(srow, irow, nrow, prow, strict=True)",
        "for s, i, n, p in reversed(list(zip(srow, irow, nrow, prow, strict=True)))",
        "every search answers its hits worst-first",
    ),
    Mutant(
        "ranking",
        "depth = query.k + query.offset",
        "depth = query.k + query.offset - 1",
        "a search answers one hit fewer than asked",
    ),
    Mutant(
        "ranking",
        "hits = hits[query.offset :]",
        "hits = hits[: query.k]",
        "asking for the next page (offset) answers the first page again",
    ),
    # -- access control --------------------------------------------------------------------------------------
    Mutant(
        "access",
        '    "/{image_id}/file",\n    response_class=FileResponse,\n    responses=ERRORS,\n'
        "    dependencies=[policy(Access.read)],",
        '    "/{image_id}/file",\n    response_class=FileResponse,\n    responses=ERRORS,\n'
        "    dependencies=[policy(Access.public)],",
        "anyone downloads every picture even with CBIR_READ_REQUIRES_KEY=true",
    ),
    Mutant(
        "access",
        '304: {"description": "The client\'s copy (If-None-Match) is current."}},\n'
        "    dependencies=[policy(Access.read)],",
        '304: {"description": "The client\'s copy (If-None-Match) is current."}},\n'
        "    dependencies=[policy(Access.public)],",
        "anyone sees every thumbnail even with CBIR_READ_REQUIRES_KEY=true",
    ),
    Mutant(
        "access",
        '"/{image_id}", response_model=DeleteOut, responses=ERRORS, dependencies=[policy(Access.write)]',
        '"/{image_id}", response_model=DeleteOut, responses=ERRORS, dependencies=[policy(Access.read)]',
        "a read key deletes images",
    ),
    Mutant(
        "access",
        "if needed is Role.read and not request.app.state.settings.read_requires_key:",
        "if not request.app.state.settings.read_requires_key:",
        "anyone without a key writes while reads are open",
    ),
    Mutant(
        "access",
        "if not role.allows(needed):",
        "if False:",
        "a read key writes",
    ),
    Mutant(
        "access",
        "return None if self is Access.public else Role(self.value)",
        "return None if self in (Access.public, Access.read) else Role(self.value)",
        "reads never need a key, whatever CBIR_READ_REQUIRES_KEY says",
    ),
    Mutant(
        "access",
        "return order.index(self) >= order.index(needed)",
        "return order.index(self) > order.index(needed)",
        "a key cannot do what its own role allows",
    ),
    Mutant(
        "access",
        "select(ApiKey).where(ApiKey.key_hash == hash_key(secret), ApiKey.revoked_at.is_(None))",
        "select(ApiKey).where(ApiKey.key_hash == hash_key(secret))",
        "a revoked key keeps working",
    ),
    Mutant(
        "access",
        "select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)",
        "select(ApiKey.id).limit(1)",
        "revoking every key leaves the service closed instead of open",
    ),
    Mutant(
        "access",
        'return token.strip() if scheme.lower() == "bearer" and token.strip() else None',
        "return token.strip() if token.strip() else None",
        "a key sent under another scheme (`Authorization: Basic <key>`) is accepted",
        equivalent="the secret itself is still checked; only the scheme word is ignored, which grants "
        "nothing a caller without the key could not have",
    ),
    # -- ingest and duplicate detection ----------------------------------------------------------------------
    Mutant(
        "ingest",
        "known=known.__contains__,",
        "known=lambda _digest: False,",
        "the bulk job decodes and embeds again every file already stored",
    ),
    Mutant(
        "ingest",
        "if result.sha256 in self.seen:",
        "if False:",
        "the bulk job embeds a repeated file once per copy",
    ),
    Mutant(
        "ingest",
        "if item.sha256 not in taken:",
        "if True:",
        "the bulk job stores a second copy of a picture uploaded while it runs",
    ),
    Mutant(
        "ingest",
        "return len(ids), len(items) - len(ids)",
        "return len(ids), 0",
        "the bulk job's report says no duplicates",
    ),
    Mutant(
        "ingest",
        "        if existing is not None:\n            return Added(existing, duplicate=True)",
        "        if False:\n            return Added(existing, duplicate=True)",
        "an upload of stored bytes is embedded again before being found a duplicate",
        equivalent="ingest's own check in the write transaction still answers the stored row with "
        "duplicate=true; only the forward pass is wasted",
    ),
    Mutant(
        "ingest",
        "self.index.remove([row.id for row in rows])",
        "pass",
        "a deleted image stays in the index (searches answer fewer hits than asked)",
        equivalent="the process's own delete comes round in the change feed, which every search, /stats "
        "and duplicate lookup follows first, and removes the id then (on Milvus too: the follower removes it "
        "from the shared store); only the index-size gauge of /metrics lags until the next of those",
    ),
    Mutant(
        "ingest",
        "(ids[0] != image_id) & ",
        "",
        "an image is listed as its own near-duplicate",
    ),
    Mutant(
        "ingest",
        "parent[max(a, b)] = min(a, b)",
        "pass",
        "`cbir duplicates` finds no groups",
    ),
    Mutant(
        "ingest",
        "limit = settings.duplicate_threshold if threshold is None else threshold",
        "limit = settings.duplicate_threshold",
        "the threshold asked for is ignored",
    ),
    # -- the vector store ------------------------------------------------------------------------------------
    Mutant(
        "vector_store",
        "scores[found < 0] = -np.inf",
        "scores[found < 0] = 0.0",
        "padding slots score 0 instead of -inf",
    ),
    Mutant(
        "vector_store",
        "width = min(int(k), ntotal)",
        "width = int(k)",
        "a small collection answers -1 ids as hits",
    ),
    Mutant(
        "vector_store",
        "radius = float(np.nextafter(np.float32(threshold), np.float32(-1)))",
        "radius = float(threshold)",
        "a vector exactly at the threshold is not a duplicate",
    ),
    Mutant(
        "vector_store",
        'order = np.argsort(-row_scores, kind="stable")',
        'order = np.argsort(row_scores, kind="stable")',
        "near-duplicates listed least similar first",
    ),
    Mutant(
        "vector_store",
        "if (counts > 1).any():",
        "if False:",
        "an id added twice in one batch is stored twice",
    ),
    Mutant(
        "vector_store",
        "present = [i for i in id_arr.tolist() if i in self._id_set]",
        "present: list[int] = []",
        "adding an id already stored keeps both vectors",
    ),
    Mutant(
        "vector_store",
        "self._id_set.difference_update(known)",
        "pass",
        "a removed id still counts as stored",
    ),
    Mutant(
        "vector_store",
        "keep = row_ids >= 0",
        "keep = row_ids >= -1",
        "range search may answer id -1",
        equivalent="FAISS range_search answers only stored ids (it never pads with -1), so the filter "
        "removes nothing",
    ),
    # -- the change feed -------------------------------------------------------------------------------------
    Mutant(
        "change_feed",
        "e.op in (ADD, DELETE)}",
        "e.op == ADD}",
        "a delete in another process is never replayed: its replicas answer fewer hits than asked",
    ),
    Mutant(
        "change_feed",
        "gone = [i for i in chunk if i not in exists and i in index]",
        "gone: list[int] = []",
        "a follower never removes what another process deleted",
    ),
    Mutant(
        "change_feed",
        "new = [i for i in present if i not in index]",
        "new = list(present)",
        "a process's own writes, coming round in the feed, are added twice: its searches fail",
    ),
    Mutant(
        "change_feed",
        "entries = changes_after(session, seen)",
        "entries = changes_after(session, seen + 1)",
        "off by one on the seq: a follower skips the first new change each time",
    ),
    Mutant(
        "change_feed",
        "select(func.max(Change.seq))",
        "select(func.min(Change.seq))",
        "the feed's last seq is its first: followers stop following after the first catch-up",
    ),
    Mutant(
        "change_feed",
        "if following.latest(self.sessions) <= self._seen_seq:",
        "if following.latest(self.sessions) <= self._seen_seq + 1:",
        "the newest change is seen only once a later one arrives",
    ),
    Mutant(
        "change_feed",
        '[{"op": op, "image_id": i, "at": now} for i in ids]',
        '[{"op": op, "image_id": i, "at": now} for i in ids[:1]]',
        "a bulk write records only its first image: other processes never see the rest",
    ),
    Mutant(
        "change_feed",
        "record_change(session, ADD, ids)",
        "pass",
        "a bulk job's images never reach a running service",
    ),
    Mutant(
        "change_feed",
        "record_change(session, DELETE, [row.id for row in rows])",
        "(lambda s: (record_change(s, DELETE, [row.id for row in rows]), s.commit()))(self.sessions())",
        "a delete is recorded in a transaction of its own, before the rows go: a replica reading the feed "
        "in between keeps the deleted images for ever",
    ),
    Mutant(
        "change_feed",
        'session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _FEED_LOCK})',
        "None",
        "PostgreSQL appends to the feed out of commit order: a follower reading between two overlapping "
        "writes skips the first for ever",
        postgresql=True,
    ),
    # -- the Milvus store ------------------------------------------------------------------------------------
    Mutant(
        "milvus",
        'options = {"filter": f"id in [{\',\'.join(map(str, allowed))}]"}',
        "options = {}",
        "a filtered search on Milvus answers images the filter excludes",
    ),
    Mutant(
        "milvus",
        'index_type="HNSW", metric_type="IP"',
        'index_type="HNSW", metric_type="L2"',
        "the Milvus index is built for the wrong metric",
    ),
    Mutant(
        "milvus",
        'scores[row, col], ids[row, col] = float(hit["distance"]), int(hit["id"])',
        'scores[row, col], ids[row, col] = -float(hit["distance"]), int(hit["id"])',
        "Milvus scores come back negated",
    ),
    Mutant(
        "milvus",
        "self._call(partial(self._client.insert, self.collection, rows, timeout=self._timeout))\n"
        "        self.flush()",
        "self._call(partial(self._client.insert, self.collection, rows, timeout=self._timeout))",
        "no flush after an add: new vectors stay in the growing segment, searched by brute force",
    ),
    Mutant(
        "milvus",
        'ef = max(int(getattr(params, "ef_search", None) or self.ef_search), int(k))',
        'ef = int(getattr(params, "ef_search", None) or self.ef_search)',
        "a search for more hits than ef_search (k=100, the API's maximum) fails on Milvus",
    ),
    Mutant(
        "milvus",
        "limit=int(k),",
        "limit=max(1, int(k) - 1),",
        "a Milvus search answers one hit fewer than asked",
    ),
    Mutant(
        "milvus",
        "if described != self.fingerprint or stored_dim != self.dim:",
        "if stored_dim != self.dim:",
        "a Milvus collection of another encoder (same dimension) is searched as this one's",
    ),
    Mutant(
        "milvus",
        '        if present:\n            raise ValueError(f"ids already in the store',
        '        if False:\n            raise ValueError(f"ids already in the store',
        "adding an id Milvus already holds stores it twice",
    ),
    Mutant(
        "milvus",
        "if len(np.unique(id_arr)) != len(id_arr):",
        "if False:",
        "an id twice in one batch is stored twice in Milvus",
    ),
    Mutant(
        "milvus",
        "present = self._present(wanted)",
        "present = wanted",
        "removing ids Milvus does not hold reports them removed",
    ),
    # -- filters ---------------------------------------------------------------------------------------------
    Mutant(
        "filters",
        '"$gt": "__gt__", "$gte": "__ge__"',
        '"$gt": "__ge__", "$gte": "__gt__"',
        "$gt and $gte swapped: the boundary value is in or out the wrong way",
    ),
    Mutant(
        "filters",
        '"$lt": "__lt__", "$lte": "__le__"',
        '"$lt": "__le__", "$lte": "__lt__"',
        "$lt and $lte swapped",
    ),
    Mutant(
        "filters",
        "parts.append(or_(*(field.equals(_scalar(key, op, item)) for item in value)))",
        "parts.append(field.equals(_scalar(key, op, value[0])))",
        "$in matches its first value only",
    ),
    Mutant(
        "filters",
        'escaped = prefix.replace("\\\\", "\\\\\\\\").replace("%", "\\\\%").replace("_", "\\\\_")',
        "escaped = prefix",
        "a path prefix's `_` and `%` act as wildcards: a bulk delete by prefix deletes other folders",
    ),
    Mutant(
        "filters",
        'return Image.original_name.like(f"{escaped}%", escape="\\\\")',
        'return Image.original_name.like(f"%{escaped}%", escape="\\\\")',
        "a path prefix matches anywhere in the path",
    ),
    Mutant(
        "filters",
        "return and_(true(), *clauses)",
        "return or_(false(), *clauses)",
        "a filter matches when any one of its conditions holds",
    ),
    Mutant(
        "filters",
        "return and_(*parts)",
        "return or_(*parts)",
        "a range ($gte and $lt on one key) matches when either bound holds",
    ),
    Mutant(
        "filters",
        'return and_(self._is("text"), getattr(self.text, RANGES[op])(value))',
        "return getattr(self.text, RANGES[op])(value)",
        "comparing with a string matches numbers too",
    ),
    Mutant(
        "filters",
        'return case((self.type.in_(("integer", "real")), self.text), else_=None)',
        "return self.text",
        'comparing with a number matches text such as "n/a" (SQLite)',
    ),
    Mutant(
        "filters",
        'return case((self.type.in_(("integer", "real")), self.text), else_=None)',
        'return case((self.type == "integer", self.text), else_=None)',
        "decimal numbers never match a numeric filter (SQLite)",
    ),
    Mutant(
        "filters",
        'return self.type == ("true" if value else "false")',
        'return self.type == ("false" if value else "true")',
        "a boolean filter matches the opposite value (SQLite)",
    ),
    Mutant(
        "filters",
        "return self.type.is_not(None) if wanted else self.type.is_(None)",
        "return self.type.is_(None) if wanted else self.type.is_not(None)",
        "$exists true and false swapped",
    ),
    Mutant(
        "filters",
        "return value.upper()",
        "return value",
        'a format filter in lower case ("png") matches nothing',
    ),
    Mutant(
        "filters",
        'key.removeprefix("metadata.")',
        "key",
        "`metadata.<key>` matches nothing",
    ),
    Mutant(
        "filters",
        'return and_(self._is("text"), self.text == value)',
        "return self.text == value",
        "a string filter matches a number of the same digits (PostgreSQL: ->> answers text)",
        postgresql=True,
    ),
]


def copy_tree(destination: Path) -> Path:
    """The checkout's tracked and unignored files, beside a link to ../shared (tests find data there)."""
    repo = destination / "repo"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (destination / "shared").symlink_to(shared)
    return repo


# Imported once by this process and inherited by each forked test run: on 2 shared cores importing torch and
# the rest took 25 s per run, more than the tests of a module. The product's own packages are never
# preloaded, so each run imports them from the mutated copy.
PRELOAD = [
    "numpy",
    "torch",
    "torchvision",
    "timm",
    "faiss",
    "PIL.Image",
    "fastapi",
    "fastapi.testclient",
    "starlette",
    "sqlalchemy",
    "alembic",
    "pydantic",
    "pydantic_settings",
    "httpx",
    "typer",
    "typer.testing",
    "prometheus_client",
    "safetensors",
    "pytest",
    # pytest's plugins from entry points (hypothesis alone took 3.6 s to import)
    "anyio.pytest_plugin",
    "_hypothesis_pytestplugin",
    "hypothesis",
    "schemathesis.pytest.plugin",
]
PRODUCT = ("app", "models", "index", "tests", "bench", "migrations")


def preload() -> None:
    import importlib

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in PRODUCT)
    if leaked:
        sys.exit(f"preloading imported the product's own modules ({leaked[:5]}): they would not be mutated")


def locate(root: Path, mutants: list[Mutant]) -> tuple[list[Path], list[str]]:
    """Each mutant's file (the one file of SEARCHED holding its snippet once), and what is wrong: snippets
    not found or found more than once, test paths of TESTS that are gone."""
    sources = {
        path.relative_to(root): path.read_text()
        for part in SEARCHED
        for path in sorted((root / part).rglob("*.py"))
    }
    files: list[Path] = []
    problems: list[str] = []
    for number, mutant in enumerate(mutants, 1):
        where = {
            path: text.count(mutant.original) for path, text in sources.items() if mutant.original in text
        }
        found = sum(where.values())
        label = f"mutant {number} [{mutant.module}] ({mutant.reason})"
        snippet = mutant.original.strip().splitlines()[0][:80]
        if found == 0:
            problems.append(f"{label}: snippet not found in {'/, '.join(SEARCHED)}/: {snippet!r}")
        elif found > 1:
            places = ", ".join(f"{path} x{count}" for path, count in where.items())
            problems.append(f"{label}: snippet found {found} times ({places}): lengthen it: {snippet!r}")
        files.append(next(iter(where), Path()))
    for module in sorted({m.module for m in mutants}):
        problems += [
            f"tests of {module}: {test} is gone" for test in TESTS[module] if not (root / test).exists()
        ]
    return files, problems


def run_tests(repo: Path, tests: list[str], timeout: float, postgresql: bool) -> tuple[bool, str]:
    """(passed, summary); a timeout counts as a failure (the mutant hangs the product). pytest runs in a
    forked child of this process, in `repo`, with `repo` first on sys.path."""
    databases = [] if postgresql else ["-k", "not postgresql"]
    # The preloaded plugins cannot have their own asserts rewritten: harmless, so not warned about.
    quiet = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    args = ["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *quiet, *databases, *tests]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run pytest, its output into the pipe
        os.close(read)
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.chdir(repo)
        sys.path.insert(0, str(repo))
        os.environ["PYTHONPATH"] = str(repo)  # for the subprocesses some tests start
        import pytest

        code = 1
        try:
            code = int(pytest.main(args))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    output = bytearray()
    deadline = time.monotonic() + timeout
    os.set_blocking(read, False)
    status = None
    while status is None:
        try:
            chunk = os.read(read, 65536)
            output += chunk
        except BlockingIOError:
            chunk = b"-"
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(raw)
        elif time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(read)
            return False, f"timed out after {timeout:.0f} s"
        elif chunk in (b"-", b""):
            time.sleep(0.05)
    try:
        while chunk := os.read(read, 65536):
            output += chunk
    except BlockingIOError:
        pass
    os.close(read)
    lines = [line for line in output.decode(errors="replace").splitlines() if line.strip()]
    summary = lines[-1] if lines else f"exit {status}"
    # The test that killed it, from pytest's short summary ("FAILED tests/...::test_x[p] - message").
    failed = [
        word
        for line in lines
        if line.startswith(("FAILED ", "ERROR "))
        for word in line.split(" - ")[0].split()[1:2]
    ]
    return status == 0, f"{summary}; by {failed[0]}" if failed else summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", choices=sorted(TESTS), help="one module's mutants")
    parser.add_argument("--match", default="", help="only the mutants whose description contains this")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per test run (default: 3x the module's baseline + 60)",
    )
    parser.add_argument("--postgresql", action="store_true", help="run the PostgreSQL variants too")
    parser.add_argument("--check", action="store_true", help="only check that every snippet is found once")
    args = parser.parse_args()
    if args.postgresql and not os.environ.get("CBIR_TEST_POSTGRES_URL"):
        sys.exit("--postgresql needs CBIR_TEST_POSTGRES_URL (start a server: bash .ci/postgres.sh)")
    selected = [
        m for m in MUTANTS if args.only in (None, m.module) and args.match.lower() in m.reason.lower()
    ]
    files, problems = locate(ROOT, selected)
    if problems:
        print(
            f"{len(problems)} mutants cannot be applied to this tree:", *problems, sep="\n  ", file=sys.stderr
        )
        sys.exit(2)
    if args.check:
        print(f"all {len(selected)} mutants find their snippet exactly once")
        return
    skipped = [m for m in selected if m.postgresql and not args.postgresql]
    mutants = [(m, f) for m, f in zip(selected, files, strict=True) if m not in skipped]
    started = time.perf_counter()
    preload()
    with tempfile.TemporaryDirectory(prefix="cbir-mutation-") as scratch:
        repo = copy_tree(Path(scratch))
        limits: dict[str, float] = {}
        for module in sorted({m.module for m, _ in mutants}):
            began = time.perf_counter()
            passed, line = run_tests(repo, TESTS[module], 1800.0, args.postgresql)
            if not passed:
                sys.exit(f"baseline: the {module} tests fail on the unmutated tree ({line}); fix them first")
            took = time.perf_counter() - began
            limits[module] = args.timeout or 3 * took + 60
            print(f"baseline {module}: {line} ({took:.0f} s; a mutant's run may take {limits[module]:.0f} s)")
        results: list[tuple[Mutant, Path, bool]] = []
        for number, (mutant, file) in enumerate(mutants, 1):
            path = repo / file
            original = path.read_text()
            path.write_text(original.replace(mutant.original, mutant.mutated))
            began = time.perf_counter()
            try:
                passed, line = run_tests(repo, TESTS[mutant.module], limits[mutant.module], args.postgresql)
            finally:
                path.write_text(original)
            results.append((mutant, file, not passed))
            verdict = "killed" if not passed else "SURVIVED"
            print(
                f"[{number:2d}/{len(mutants)}] {verdict:8s} {mutant.module:12s} {mutant.reason} "
                f"({file}: {line}; {time.perf_counter() - began:.0f} s)",
                flush=True,
            )
    for mutant in skipped:
        print(f"not run: {mutant.module}: {mutant.reason} -- only PostgreSQL shows it: run with --postgresql")
    report(results, time.perf_counter() - started)


def report(results: list[tuple[Mutant, Path, bool]], seconds: float) -> None:
    modules: dict[str, dict[str, float]] = {}
    for module in sorted({m.module for m, _, _ in results}):
        counted = [killed for m, _, killed in results if m.module == module and m.equivalent is None]
        killed = sum(counted)
        equivalent = sum(1 for m, _, _ in results if m.module == module and m.equivalent is not None)
        modules[module] = {
            "mutants": len(counted),
            "killed": killed,
            "equivalent": equivalent,
            "killed_ratio": round(killed / len(counted), 3) if counted else 1.0,
        }
        print(
            f"{module:12s} {killed}/{len(counted)} killed ({modules[module]['killed_ratio']:.0%})"
            + (f", {equivalent} equivalent" if equivalent else "")
        )
    survivors = [
        {"module": m.module, "file": str(file), "mutant": m.reason, "equivalent": m.equivalent}
        for m, file, killed in results
        if not killed
    ]
    for survivor in survivors:
        why = f" -- equivalent: {survivor['equivalent']}" if survivor["equivalent"] else ""
        print(f"survivor: {survivor['module']}: {survivor['mutant']} ({survivor['file']}){why}")
    verdicts = [killed for m, _, killed in results if m.equivalent is None]
    ratio = round(sum(verdicts) / len(verdicts), 3) if verdicts else 1.0
    print(f"{sum(verdicts)}/{len(verdicts)} non-equivalent mutants killed in {seconds / 60:.1f} min")
    print(json.dumps({"killed_ratio": ratio, "modules": modules, "survivors": survivors}))


if __name__ == "__main__":
    main()
