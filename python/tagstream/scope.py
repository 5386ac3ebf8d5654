"""Stream scopes: ``with stream_switch("1"):`` sends the block's ops, records and waits to the
stream tagged ``"1"``; outside every scope work goes to the main stream ``"default"``.

A scope belongs to the thread that entered it. Switching orders nothing by itself: use tagged
events (``tagstream.ops``) to order work across streams.
"""

from ._native import StreamSwitch, current_stream, stream_switch

#: torchair's name of :func:`stream_switch`.
npu_stream_switch = stream_switch

__all__ = ["stream_switch", "npu_stream_switch", "current_stream", "StreamSwitch"]
