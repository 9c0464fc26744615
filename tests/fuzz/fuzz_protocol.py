"""A long fuzz run of the HTTP/1.1 parser, outside CI.

    pip install -e '.[test,fuzz]'
    python -m tests.fuzz.fuzz_protocol --minutes 10              # both engines, in parallel
    python -m tests.fuzz.fuzz_protocol --minutes 10 --engine hypothesis
    python -m tests.fuzz.fuzz_protocol --minutes 10 --engine atheris

Two engines hold the parser to the invariants of ``tests/support/protocol_checks.py``
(the same ones the CI property tests check with a few hundred examples):

* ``hypothesis``: the CI strategies with far more examples, longer inputs and
  a fresh seed per batch: valid pipelines (which must parse to exactly what
  was generated, split anywhere), mutated and random streams (events or
  ``ProtocolError`` only, split-independent, round trip of every accepted
  request, bounded buffer), long garbage (bounded buffer);
* ``atheris``: coverage-guided libFuzzer over raw bytes, seeded with the shared
  HTTP corpus and generated requests. Its input is two control bytes (limits,
  where to split) and the stream.

Both also compare every stream with llhttp (``httptools``) as a differential
oracle: where both parsers accept a request they must agree on method, target,
version, fields and body, i.e. on where each message ends. Streams llhttp
refuses but gshard accepts are counted by llhttp's reason and printed at the
end for a person to judge (llhttp refuses unknown methods and whitespace
before a chunk extension's ``;``, both of which RFC 9112 allows).

A failure prints the input, saves it under ``--out`` (default
``fuzz-output/``) and exits 1. Exit 0 means the time ran out with nothing found.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time
from collections import Counter

# How long one input may take before it counts as a hang.
HANG_SECONDS = 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.fuzz_protocol",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long each engine runs")
    parser.add_argument("--engine", choices=["both", "hypothesis", "atheris"], default="both")
    parser.add_argument("--seed", type=int, default=None, help="first hypothesis seed")
    parser.add_argument("--out", default="fuzz-output", help="where findings and stats go")
    parser.add_argument("--write-seeds", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_seeds:
        write_seeds(pathlib.Path(args.write_seeds))
        return 0
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds = args.minutes * 60
    if args.engine == "hypothesis":
        return hypothesis_engine(seconds, args.seed, out)
    if args.engine == "atheris":
        return atheris_engine(seconds, out)
    # Both at once, one process each (a machine has two cores at least).
    engines = ["hypothesis", "atheris"]
    if importlib.util.find_spec("atheris") is None:
        print("atheris is not installed (pip install -e '.[fuzz]'): hypothesis only")
        engines.remove("atheris")
    if importlib.util.find_spec("httptools") is None:
        print("httptools is not installed: no comparison with llhttp")
    children = []
    for engine in engines:
        cmd = [sys.executable, "-m", "tests.fuzz.fuzz_protocol", "--engine", engine,
               "--minutes", str(args.minutes), "--out", str(out / engine)]
        if args.seed is not None and engine == "hypothesis":
            cmd += ["--seed", str(args.seed)]
        children.append(subprocess.Popen(cmd))
    codes = [child.wait() for child in children]
    print("engines finished: " + ", ".join(f"{e} {c}" for e, c in zip(engines, codes, strict=True)))
    return max(codes)


@contextlib.contextmanager
def hang_guard(seconds: float = HANG_SECONDS):
    """Turn an input that takes too long into a failure instead of a stuck run."""
    from tests.support.protocol_checks import ParserBug

    def alarm(signum, frame):
        raise ParserBug(f"input took longer than {seconds}s (hang or quadratic work)")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- hypothesis ------------------------------------------------------------------------


def hypothesis_engine(seconds: float, first_seed: int | None, out: pathlib.Path) -> int:
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st

    from gshard.errors import ProtocolError
    from gshard.http.protocol import Need, ServerConnection
    from tests.support import protocol_checks as pc

    stats: Counter = Counter()
    samples: dict[str, list[str]] = {}

    def record(report: pc.StreamReport) -> None:
        whole = report.whole
        stats[f"outcome {whole.end} {whole.status}"] += 1
        stats[f"requests accepted {min(len(whole.complete_messages), 3)}"] += 1
        if report.status_differs:
            key = f"status whole/split {report.status_differs}"
            stats[key] += 1
        key = f"llhttp {report.llhttp}"
        stats[key] += 1
        if not report.llhttp.startswith(("agree", "both-refuse")):
            samples.setdefault(key, [])
            if len(samples[key]) < 3:
                samples[key].append(repr(report.data[:300]))

    long_hostile = st.one_of(
        pc.hostile_streams,
        st.binary(min_size=300, max_size=6000),
        st.lists(st.sampled_from(pc._INTERESTING), max_size=300).map(b"".join),
        pc.pipelines(6).flatmap(lambda p: pc.mutated(p.data)),
    )
    cuts = st.lists(st.integers(0, 7000), max_size=12)

    def hostile(data, cuts, limits):
        with hang_guard():
            report = pc.check_stream(data, cuts, limits, differential=limits is pc.DEFAULT_LIMITS)
        record(report)

    def valid(pipeline, cuts, chunk_sizes):
        with hang_guard():
            report = pc.check_stream(pipeline.data, cuts, pc.DEFAULT_LIMITS, differential=True)
            pc.check_pipeline(pipeline, report.whole)
            for request, body in report.whole.complete_messages:
                pc.check_round_trip(request, body, pc.DEFAULT_LIMITS, chunk_sizes or None)
        record(report)

    def memory(prefix, garbage, repeat, receive, limits):
        stream = prefix + garbage * repeat
        conn = ServerConnection(limits)
        with hang_guard():
            for start in range(0, len(stream), receive):
                piece = stream[start : start + receive]
                conn.receive_data(piece)
                try:
                    while (event := conn.next_event()) is not Need.DATA:
                        if event is Need.PAUSED:
                            stats["memory: a request completed"] += 1
                            return
                except ProtocolError as exc:
                    stats[f"memory: refused {exc.status}"] += 1
                    return
                bound = pc.buffer_bound(conn)
                if conn.buffered > bound:
                    raise pc.ParserBug(f"{conn.buffered} bytes buffered, bound {bound}")
        stats["memory: still waiting"] += 1

    prefixes = [b"", b"GET /", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nX: ",
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"]
    # (name, function, its strategies, examples per batch); each batch wraps
    # the plain function anew, as hypothesis settles a test's settings once.
    tests = [
        ("hostile", hostile, dict(data=long_hostile, cuts=cuts, limits=pc.limit_sets), 400),
        ("valid", valid, dict(pipeline=pc.pipelines(6), cuts=cuts,
                              chunk_sizes=st.lists(st.integers(1, 40), max_size=5)), 200),
        ("memory", memory, dict(prefix=st.sampled_from(prefixes),
                                garbage=st.binary(min_size=1, max_size=200),
                                repeat=st.integers(1, 5000), receive=st.integers(1, 65536),
                                limits=pc.limit_sets), 100),
    ]
    rng = random.Random(first_seed)
    deadline = time.monotonic() + seconds
    batch_seed = first_seed if first_seed is not None else rng.randrange(2**32)
    batches = 0
    started = time.monotonic()
    print(f"hypothesis engine: {seconds:.0f}s, first seed {batch_seed}", flush=True)
    while time.monotonic() < deadline:
        for name, function, strategies, examples in tests:
            configured = settings(
                max_examples=examples, deadline=None, database=None,
                phases=[Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            )(seed(batch_seed)(given(**strategies)(function)))
            try:
                configured()
            except Exception as exc:  # hypothesis re-raises the shrunk failure
                path = out / f"hypothesis-{name}-{batch_seed}.txt"
                path.write_text(f"seed {batch_seed}\n{type(exc).__name__}: {exc}\n")
                print(f"FOUND by {name} (seed {batch_seed}); saved to {path}", flush=True)
                raise
            stats[f"examples {name}"] += examples
        batches += 1
        batch_seed = rng.randrange(2**32)
        if batches % 10 == 0:
            print(f"  {time.monotonic() - started:.0f}s: {batches} batches", flush=True)
    elapsed = time.monotonic() - started
    summary = {"engine": "hypothesis", "seconds": round(elapsed), "batches": batches,
               "stats": dict(sorted(stats.items())), "samples": samples}
    (out / "hypothesis-summary.json").write_text(json.dumps(summary, indent=1))
    print(f"hypothesis engine: {batches} batches in {elapsed:.0f}s, nothing found")
    for key, count in sorted(stats.items()):
        print(f"  {count:8d}  {key}")
    for key, examples in samples.items():
        print(f"  e.g. {key}: {examples[0][:200]}")
    return 0


# --- atheris (libFuzzer) ---------------------------------------------------------------


def atheris_engine(seconds: float, out: pathlib.Path) -> int:
    try:
        import atheris
    except ImportError:
        print("atheris is not installed (pip install atheris); use --engine hypothesis",
              file=sys.stderr)
        return 2
    seeds = out / "seeds"
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    # Generated by another process, so hypothesis runs uninstrumented.
    subprocess.run([sys.executable, "-m", "tests.fuzz.fuzz_protocol", "--write-seeds",
                    str(seeds)], check=True)
    # No "RegEx" hook: its pattern proxies do not take pos/endpos, which the
    # parser passes.
    with atheris.instrument_imports(include=["gshard"]):
        import gshard.protocol  # noqa: F401  (instrumented for coverage)
    from tests.support import protocol_checks as pc

    def one_input(data: bytes) -> None:
        if len(data) < 2:
            return
        limits = pc.SMALL_LIMITS if data[0] & 1 else pc.DEFAULT_LIMITS
        stream = data[2:]
        rng = random.Random(data[1])
        cuts = [rng.randrange(len(stream) + 1) for _ in range(data[1] % 6)]
        with hang_guard():
            pc.check_stream(stream, cuts, limits, differential=limits is pc.DEFAULT_LIMITS)

    args = [sys.argv[0], str(corpus), str(seeds), f"-max_total_time={int(seconds)}",
            f"-timeout={HANG_SECONDS * 2}", "-rss_limit_mb=3072", "-max_len=8192",
            f"-artifact_prefix={out}{os.sep}", "-print_final_stats=1"]
    print(f"atheris engine: {' '.join(args[1:])}", flush=True)
    atheris.Setup(args, one_input)
    atheris.Fuzz()  # exits the process: 0 when time ran out, non-zero on a finding
    return 0


def write_seeds(folder: pathlib.Path) -> None:
    """The shared corpus's requests and a few hundred generated ones, as atheris inputs."""
    from hypothesis import HealthCheck, given, settings

    from tests.support import protocol_checks as pc
    from tests.support.paths import CORPUS_DIR, corpus_runner

    streams: list[bytes] = []
    if (CORPUS_DIR / "run_corpus.py").exists():
        run_corpus = corpus_runner()

        for case in run_corpus.load_corpus(str(CORPUS_DIR / "gunicorn")):
            data, _ = run_corpus.fix_content_length(case, run_corpus.add_missing_host(case))
            streams.append(data)

    @settings(max_examples=300, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(pipeline=pc.pipelines(3))
    def collect(pipeline):
        streams.append(pipeline.data)

    collect()
    folder.mkdir(parents=True, exist_ok=True)
    for index, stream in enumerate(streams):
        (folder / f"seed-{index:04d}").write_bytes(b"\x00\x00" + stream)


if __name__ == "__main__":
    sys.exit(main())
