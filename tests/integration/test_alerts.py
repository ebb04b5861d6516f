"""Alerts through a webhook, received by a real HTTP server on loopback: the warehouse (its own
stand-in, 300 ms per statement) stops under load, floe stops moving, and the webhook hears of it
within the stall window plus 5 s; once the warehouse is back, the alerts resolve, each once."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import Floe, Run, SlowWarehouse, generate

STALL_SECS = 10


class Receiver:
    """An HTTP server that keeps every POST: (arrival time, path, JSON body)."""

    def __init__(self) -> None:
        self.posts: list[tuple[float, str, dict]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                n = int(self.headers.get("Content-Length", "0"))
                posts.append((time.time(), self.path, json.loads(self.rfile.read(n))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def first(self, alert: str, state: str, after: float, timeout: float) -> float:
        """When the first `alert` in `state` arrived after `after`; waits up to `timeout`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for at, _, body in list(self.posts):
                if at >= after and body.get("alert") == alert and body.get("state") == state:
                    return at
            time.sleep(0.2)
        raise AssertionError(f"no {alert} {state} within {timeout} s; got {[p[2] for p in self.posts]}")

    def count(self, alert: str, state: str) -> int:
        return sum(1 for _, _, b in self.posts if b.get("alert") == alert and b.get("state") == state)


def test_a_stalled_floe_alerts_within_its_window_and_resolves():
    slow = SlowWarehouse(latency_ms=300)
    receiver = Receiver()
    floe = None
    try:
        slow.schema("PUBLIC")
        run = Run("alerts")
        token = f"T0KEN-{run.suffix}"
        floe = Floe(
            run,
            ALERT_WEBHOOK_URL=f"http://127.0.0.1:{receiver.port}/hooks/{token}",
            FLOE__ALERTS__WEBHOOK_FORMAT="json",
            FLOE__ALERTS__STALL_SECS=str(STALL_SECS),
            # Only this test's changes: the shared topic's backlog from earlier tests would make
            # the first batches (at 300 ms per statement) slower than the stall window.
            **{"FLOE__KAFKA__CONSUMER_PROPERTIES__AUTO.OFFSET.RESET": "latest"},
            **slow.env,
        )
        time.sleep(5)  # joined the group, at the end of the topic
        load = threading.Thread(
            target=generate, args=("load", "--ops", "2000", "--rate", "100"), kwargs={"seed": 51},
            daemon=True,
        )
        load.start()
        # Loading first (the stats line every 2 s shows rows loaded).
        deadline = time.time() + 60
        while "loaded=0 " in floe.output().split("consumed=")[-1] or "consumed=" not in floe.output():
            assert time.time() < deadline, floe.output()[-3000:]
            time.sleep(0.5)
        assert receiver.posts == [], "an alert while floe was moving"
        halted = time.time()
        slow.halt()
        stalled = receiver.first("stalled", "firing", halted, timeout=STALL_SECS + 30)
        latency = stalled - halted
        print(f"alert_latency_secs={latency:.1f} (stall window {STALL_SECS} s)")
        assert latency <= STALL_SECS + 5, f"the stall alert took {latency:.1f} s"
        receiver.first("unready", "firing", halted, timeout=STALL_SECS + 30)
        time.sleep(3)
        slow.start()
        back = time.time()
        receiver.first("stalled", "resolved", back, timeout=60)
        receiver.first("unready", "resolved", back, timeout=60)
        load.join()
        # Deduplicated (the repeat window is an hour), and each alert resolved once.
        for alert in ("stalled", "unready"):
            assert receiver.count(alert, "firing") == 1, receiver.posts
            assert receiver.count(alert, "resolved") == 1, receiver.posts
        assert all(body["group"].startswith("floe-test-alerts-") for _, _, body in receiver.posts)
        assert floe.stop() == 0, floe.output()[-3000:]
        assert token not in floe.output(), "the webhook URL (a secret) was printed"
        assert "alert sent" in floe.output()
    finally:
        if floe is not None and floe.proc.poll() is None:
            floe.kill9()
        receiver.server.shutdown()
        slow.stop()
