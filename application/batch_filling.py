"""How the server's scheduler fills a decoder batch from the requests' queues: a window a request in turn, and
short requests' windows packed together (``domain/packing.py``) where packing is on."""

from __future__ import annotations

from collections import deque
from collections.abc import Collection

from attrs import define

from onepass_whisper.domain.audio import Window
from onepass_whisper.domain.packing import fits, packable


@define
class Queued:
    window: Window
    since: float  # time.monotonic() when queued


def fill_batch(
    turns: list[deque[Queued]], batch_size: int, pack_seconds: float, alone: Collection[int]
) -> tuple[list[Window], list[list[Window]]]:
    """Up to ``batch_size`` decoder rows from ``turns`` (each request's queue, oldest request first), a window a
    request in turn, so that a short request behind a long one shares the next batch instead of waiting for all of
    it: the windows decoded as they are, and packs of two or more windows (first fit in a 30-s window) of requests
    up to ``pack_seconds`` long that are not in ``alone``. A pack takes one row. ``pack_seconds`` 0: no packs.
    Taken windows leave their queues; emptied queues leave ``turns``."""
    plain: list[Window] = []
    bins: list[list[Window]] = []

    def room() -> bool:
        return len(plain) + len(bins) < batch_size

    while turns and room():
        for queue in list(turns):
            window = queue[0].window
            if pack_seconds > 0 and window.source not in alone and packable(window, pack_seconds):
                into = next((b for b in bins if fits([w.duration for w in b], window.duration)), None)
                if into is not None:
                    into.append(window)
                elif room():
                    bins.append([window])
                else:
                    break
            elif room():
                plain.append(window)
            else:
                break
            queue.popleft()
            if not queue:
                turns.remove(queue)
        else:
            continue
        break
    plain.extend(b[0] for b in bins if len(b) == 1)  # a pack of one is a window like any other
    return plain, [b for b in bins if len(b) > 1]
