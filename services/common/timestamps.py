"""protobuf Timestamps from the two ways services keep time: datetimes and epoch seconds."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(moment: datetime | float | None) -> Timestamp | None:
    """None stays None, so an unset time leaves the message field unset."""
    if moment is None:
        return None
    stamp = Timestamp()
    if isinstance(moment, datetime):
        stamp.FromDatetime(moment)
    else:
        stamp.FromNanoseconds(int(moment * 1e9))
    return stamp
