"""``python -m bench.connections``: SFTP connections at once against the server's round trip.

The figures behind ``backends.sftp.connections_for``. A loopback OpenSSH is reached
directly and through a relay that holds every chunk half the added round trip each way
(tc's netem is not in this machine's kernel); for each, mirror copies the ``small`` tree
with ``concurrency`` set to each count in turn, and once with none set (its own choice),
the order rotated each round. Prints the round trip the driver measures as it connects,
and per count the median wall and CPU time of the first copy.

    python -m bench.connections                        # 0, 2, 5 and 20 ms added; 1, 2 and 4 connections
    python -m bench.connections --added 0,20 --counts 1,4 --rounds 5

The relay is this process's Python on the same 2 cores: through it, every run is slower
than direct, so compare counts within one row, not rows with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from bench import places, sshd, trees
from bench.proc import timed
from bench.run import warm
from bench.tools import Target, mirror_command, mirror_sftp_config


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Forward each chunk ``delay_s`` after it came, in order: latency, not a bandwidth cap."""
    due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            at, data = await due.get()
            if not data:
                writer.close()
                return
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    while True:
        data = await reader.read(1 << 20)
        due.put_nowait((time.monotonic() + delay_s, data))
        if not data:
            break
    await sender


@contextmanager
def relay(port: int, added_s: float) -> Iterator[int]:
    """A relay to ``127.0.0.1:port`` adding ``added_s`` to every round trip; yields its port."""
    ready: list[int] = []
    started = threading.Event()

    async def serve() -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.gather(_pump(r, up_w, added_s / 2), _pump(up_r, w, added_s / 2), return_exceptions=True)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        ready.append(server.sockets[0].getsockname()[1])
        started.set()
        async with server:
            await server.serve_forever()

    threading.Thread(target=asyncio.run, args=(serve(),), daemon=True).start()
    started.wait(10)
    yield ready[0]


def round_trip_ms(server: sshd.Server, port: int) -> float:
    """The round trip the SFTP driver measures as it connects to the server on ``port``."""
    from backends import sftp  # the checkout's: bench runs from its top folder

    sftp._load_paramiko()
    params, _ = sftp.parse(
        f"sftp://{server.user}@{server.host}:{port}/",
        {"key_filename": str(server.key), "known_hosts": str(server.known_hosts)},
    )
    links = sftp._Links(params)
    try:
        return sftp._home_and_round_trip(links.take().sftp)[1] * 1000
    finally:
        links.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.connections",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--added", default="0,2,5,20", help="milliseconds added to the round trip (0: direct)")
    p.add_argument("--counts", default="1,2,4", help="values of concurrency to try")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    added = [float(a) for a in args.added.split(",")]
    counts = [int(c) for c in args.counts.split(",")] + [0]  # 0: mirror's own choice
    src = trees.tree(trees.SPECS["small"])
    warm(src)
    scratch = places.fresh(trees.cache_dir() / "scratch" / "connections")
    command = mirror_command()
    rows = []
    with sshd.loopback(trees.cache_dir() / "sshd") as server:
        for ms in added:
            with relay(server.port, ms / 1000) if ms else _direct(server.port) as port:
                near = replace(server, port=port, known_hosts=scratch / f"known_hosts-{port}")
                host_key = server.known_hosts.read_text().split(maxsplit=1)[1]
                near.known_hosts.write_text(f"[{server.host}]:{port} {host_key}")
                seen = round_trip_ms(near, port)
                samples: dict[int, list[tuple[float, float]]] = {c: [] for c in counts}
                for round_ in range(args.rounds):
                    for count in counts[round_ % len(counts) :] + counts[: round_ % len(counts)]:
                        samples[count].append(_first_copy(command, src, near, scratch, count))
                rows.append((ms, seen, samples))
                print(f"bench: {ms:g} ms added done", file=sys.stderr)
    print(f"\n`python -m bench.connections {' '.join(sys.argv[1:] if argv is None else argv)}`\n")
    print("| added | round trip | " + " | ".join(f"{c or 'default'}" for c in counts) + " |")
    print("|---|---|" + "---|" * len(counts))
    for ms, seen, samples in rows:
        cells = [
            f"{statistics.median(w for w, _ in s):.2f} s (CPU {statistics.median(c for _, c in s):.2f})"
            for s in samples.values()
        ]
        print(f"| {ms:g} ms | {seen:.2f} ms | " + " | ".join(cells) + " |")


@contextmanager
def _direct(port: int) -> Iterator[int]:
    yield port


def _first_copy(
    command: list[str], src: Path, server: sshd.Server, scratch: Path, count: int
) -> tuple[float, float]:
    target = places.fresh(places.target_root() / "connections")
    config = scratch / "mirror.toml"
    text = mirror_sftp_config(src, Target("sftp", target, server))
    config.write_text(text + (f"concurrency = {count}\n" if count else ""))
    state = places.fresh(scratch / "state")
    sample = timed(
        [*command, "run", "-c", str(config), "--once", "-q"], {**os.environ, "MIRROR_STATE_DIR": str(state)}
    )
    if places.count_files(target) != trees.SPECS["small"].files:
        raise SystemExit(f"bench: the copy with concurrency {count} is incomplete")
    return sample.seconds, sample.cpu_seconds


if __name__ == "__main__":
    main()
