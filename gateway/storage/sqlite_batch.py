"""The group commit's batch: the puts one SQLite transaction commits together, and how they are signalled."""
from __future__ import annotations

import threading

from gateway.receipts import Receipt
from gateway.report_marks import ReportMark


class Batch:
    """The admitted puts one transaction commits together.

    Signals are made only when somebody waits (a lone put leads and waits for nothing): ``done``
    by the first put that joins behind the batch's first, ``lead`` by a first put that arrives
    while another commit runs (the finishing leader sets it to hand over, and that caller commits
    the batch for everyone in it).
    """

    __slots__ = ("rows", "size", "puts", "receipts", "marks", "failure", "done", "lead")

    def __init__(self) -> None:
        self.rows: list[bytes] = []  # the payloads of every put, in put order
        self.size = 0  # what they count against max_size_mb
        self.puts = 0
        self.receipts: list[Receipt] = []  # the puts' receipts (Idempotency-Key), committed with them
        self.marks: list[ReportMark] = []  # the puts' reportStrategy marks, committed with them
        self.failure: str | None = None  # set when the transaction failed (StorageFailure)
        self.done: threading.Event | None = None
        self.lead: threading.Event | None = None
