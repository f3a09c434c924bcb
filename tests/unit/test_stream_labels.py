"""No client can grow the metric series: stream labels stop at MAX_STREAM_LABELS ids."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from ghostream import monitoring
from ghostream.history.events import PublishStarted, PublishStopped, ViewerJoined, ViewerLeft

EXTRA = 5


def test_streams_past_the_label_cap_are_counted_as_other(monkeypatch) -> None:
    monkeypatch.setattr(monitoring, "STREAM_LABELS", monitoring.StreamLabels())
    registry = CollectorRegistry()
    served = monitoring.StreamCounter(
        "test_served_total", "Viewers served", ["stream", "protocol"], registry=registry
    )
    ids = [f"stream{n}" for n in range(monitoring.MAX_STREAM_LABELS + EXTRA)]
    for stream_id in ids:
        monitoring.observe(PublishStarted(stream_id, "192.0.2.1:1", "srt", 0.0))
        monitoring.observe(ViewerJoined(stream_id, 1, "192.0.2.2:1", "srt", 0.0))
        served.labels(stream_id, "srt").inc()
    try:
        streams = {
            sample.labels["stream"]
            for metric in registry.collect()
            for sample in metric.samples
            if sample.name == "test_served_total"
        }
        assert streams == {*ids[: monitoring.MAX_STREAM_LABELS], "other"}
        assert registry.get_sample_value(
            "test_served_total", {"stream": "other", "protocol": "srt"}
        ) == pytest.approx(EXTRA)
        # The server's own gauges: the ids past the cap share one series too.
        viewers = monitoring.REGISTRY.get_sample_value(
            "ghostream_viewers", {"stream": "other", "protocol": "srt"}
        )
        assert viewers is not None and viewers >= EXTRA
        assert (
            monitoring.REGISTRY.get_sample_value(
                "ghostream_viewers", {"stream": ids[-1], "protocol": "srt"}
            )
            is None
        )
    finally:
        for stream_id in ids:
            monitoring.observe(ViewerLeft(stream_id, 1, "", "srt", 1.0, 0, "left"))
            monitoring.observe(PublishStopped(stream_id, "192.0.2.1:1", "srt", 1.0, 0, "gone"))
