"""A wall-clock sampling profile of one `ecpi_run`: where the time goes, Beam included.

    python benchmarks/sample_profile.py params.ini [Beam options] [--interval-ms 1]

A thread samples the main thread's stack every --interval-ms while `ecpi_run` runs in this
process (after the imports, which `bench_chain.py --phases` measures). Each sample is counted
under the outermost frame of ecpi_beam's kernels or I/O (the science and the writers), else
the innermost of its transforms (the DoFns' own code), else under the innermost frame of Beam (its runner, bundles, options, state sampler), else where it
is. Unlike cProfile, the sampling barely slows Python-heavy code, so Beam's share is not
inflated; the sampler itself takes a few per cent.
"""
from __future__ import annotations

import argparse
import collections
import sys
import threading
import time


def _stack(frame):
    names = []
    while frame is not None:
        names.append((frame.f_code.co_filename.split("site-packages/")[-1], frame.f_code.co_name))
        frame = frame.f_back
    return names[::-1]


def _label(stack) -> str:
    for path, name in stack:
        if "ecpi_beam/kernels/" in path or "ecpi_beam/io/" in path:
            return f"project: {path.split('ecpi_beam/')[-1]}:{name}"
    for path, name in reversed(stack):
        if "ecpi_beam/transforms/" in path:
            return f"project: {path.split('ecpi_beam/')[-1]}:{name}"
    beam = [f"{path}:{name}" for path, name in stack if path.startswith("apache_beam")]
    if beam:
        return f"beam: {beam[-1]}"
    path, name = stack[-1]
    return f"other: {path.split('/')[-1]}:{name}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval-ms", type=float, default=1.0)
    parser.add_argument("--top", type=int, default=30)
    args, ecpi_args = parser.parse_known_args(argv)
    import ecpi_beam.run  # noqa: F401  (imports are not sampled)
    from ecpi_beam import cli

    samples, done = [], threading.Event()
    main_id = threading.main_thread().ident

    def sample():
        while not done.is_set():
            frame = sys._current_frames().get(main_id)  # pylint: disable=protected-access
            if frame is not None:
                samples.append(_label(_stack(frame)))
            time.sleep(args.interval_ms / 1000.0)

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    sampler.start()
    try:
        code = cli.ecpi_run(ecpi_args)
    finally:
        done.set()
        sampler.join()
    elapsed = time.perf_counter() - started
    counts = collections.Counter(samples)
    groups = collections.Counter(label.split(":")[0] for label in samples)
    print(f"{len(samples)} samples over {elapsed:.2f} s (after the imports)")
    for group, count in groups.most_common():
        print(f"{count / len(samples) * 100:5.1f} %  {group} (all)")
    for label, count in counts.most_common(args.top):
        print(f"{count / len(samples) * 100:5.1f} %  {label}")
    return code


if __name__ == "__main__":
    sys.exit(main())
