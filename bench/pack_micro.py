"""Microbenchmarks of the storage → MQTT side: packer µs per message, sender events per publish and CPU.

``python bench/pack_micro.py pack``   : encode_record + Packer.pack on array-scenario-like messages,
                                        µs per message (run it at two revisions to compare formats).
``python bench/pack_micro.py sender`` : MemoryStorage + Northbound against a private mosquitto, fed at a
                                        steady rate by 8 threads (one event per put, like the main
                                        scenario); prints events per publish and the CPU µs per event
                                        of the sender thread and paho's network thread, per linger value.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from converters.model import ConvertedData, TelemetryEntry  # noqa: E402
from gateway.config.model import ThingsBoardConfig  # noqa: E402
from gateway.northbound import Northbound  # noqa: E402
from gateway.northbound.packing import Packer  # noqa: E402
from gateway.storage.memory import MemoryStorage, SizeLimits  # noqa: E402
from gateway.uplink import encode_record  # noqa: E402


def _message(n: int) -> ConvertedData:
    """What the array scenario's converter makes of message ``n``: 100 devices, 2 attributes, 2 values."""
    return ConvertedData(f"SN-{n % 100:03d}", "Thermometer", {"model": "T1000", "T1000": "on"},
                         [TelemetryEntry(1_700_000_000_000 + n, {"temperature": 20.0 + n % 10, "humidity": 67.0})])


def bench_pack(messages: int, repeat: int) -> None:
    """µs per message to store (encode_record) and to pack ``messages`` records (best of ``repeat``)."""
    packer = Packer()
    items = [_message(n) for n in range(messages)]
    best_enc = best_pack = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        events = [(i + 1, encode_record(item)) for i, item in enumerate(items)]
        best_enc = min(best_enc, time.perf_counter() - start)
        start = time.perf_counter()
        result = packer.pack(events, set())
        best_pack = min(best_pack, time.perf_counter() - start)
    size = sum(len(p) for _, p in events) / len(events)
    print(f"encode_record {best_enc / messages * 1e6:5.2f} µs/msg, pack {best_pack / messages * 1e6:5.2f} "
          f"µs/msg, together {(best_enc + best_pack) / messages * 1e6:5.2f} µs/msg; record {size:.0f} B, "
          f"{len(result.publishes)} publishes for {messages} messages")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per Python thread name of this process (from /proc, by native thread id)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[thread.name] = out.get(thread.name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def bench_sender(lingers: list[float], rate: float, seconds: float) -> None:
    """Events per publish and sender + paho CPU per event at ``rate`` puts/s, for each linger (ms)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "m.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            for linger in lingers:
                _sender_run(port, linger, rate, seconds)
        finally:
            broker.terminate()
            broker.wait(5)


def _sender_run(port: int, linger: float, rate: float, seconds: float) -> None:
    storage = MemoryStorage(SizeLimits(1_000_000, 1 << 30))
    nb = Northbound(ThingsBoardConfig(host="127.0.0.1", port=port), storage, linger_ms=linger)
    nb.start()
    while not nb.connected:
        time.sleep(0.01)
    payload = encode_record(_message(1))
    stop = threading.Event()
    threads_n = 8
    interval = threads_n / rate

    def produce() -> None:
        nxt = time.monotonic()
        while not stop.is_set():
            storage.put([payload])
            nxt += interval
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    before, stats0 = _thread_cpu(), nb.stats()
    threads = [threading.Thread(target=produce) for _ in range(threads_n)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 10
    while storage.count() and time.monotonic() < deadline:
        time.sleep(0.01)
    after, stats = _thread_cpu(), nb.stats()
    nb.stop(2.0)
    storage.close()
    events = stats["events_sent"] - stats0["events_sent"]
    publishes = stats["published"] - stats0["published"]

    def cpu(prefix: str) -> float:
        return sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith(prefix))

    sender, paho = cpu("rgw-northbound"), cpu("paho")
    print(f"linger {linger:4.1f} ms: {events / seconds:7.0f} events/s, {events / max(publishes, 1):6.1f} "
          f"events/publish, sender {sender / max(events, 1) * 1e6:5.1f} µs/event, paho "
          f"{paho / max(events, 1) * 1e6:5.1f} µs/event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["pack", "sender"])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--linger", default="0,1,2,5", help="comma list of linger values (ms)")
    parser.add_argument("--rate", type=float, default=4500.0, help="puts per second (sender mode)")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.mode == "pack":
        bench_pack(args.messages, args.repeat)
    else:
        bench_sender([float(x) for x in args.linger.split(",")], args.rate, args.seconds)


if __name__ == "__main__":
    main()
