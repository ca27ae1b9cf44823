"""The dashboard page in headless Chromium: it draws what the job publishes, live."""

import os
import shutil
import threading
from pathlib import Path

import pytest

from nonsense_hpc.dashboard import Dashboard, start_heartbeat
from nonsense_hpc.devices import Forwarder, Publisher

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


class Job:
    """Four pretend ranks publishing through a real Forwarder, one step per call."""

    def __init__(self, address):
        self.pub = Publisher(address, job_id="demo-job")
        if not self.pub.wait_connected(10):
            raise TimeoutError("publisher did not connect to the forwarder")
        self.beats = [start_heartbeat(address, every=0.3, rank=r, job_id="demo-job")
                      for r in range(4)]
        self.step = 0

    def advance(self, n=1):
        for _ in range(n):
            self.step += 1
            k = self.step
            self.pub.metric("train", {"loss": 2.3 / (1 + 0.04 * k),
                                      "accuracy": 0.97 - 0.87 / (1 + 0.03 * k)}, step=k)
            if k % 10 == 0:
                self.pub.metric("val", {"loss": 2.4 / (1 + 0.035 * k),
                                        "accuracy": 0.95 - 0.85 / (1 + 0.03 * k)}, step=k)

    def close(self):
        for b in self.beats:
            b.stop()
        self.pub.close()


@pytest.fixture
def live():
    fwd = Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start("thread")
    dash = Dashboard(fwd.endpoints["out"], port=0).start()
    job = Job(fwd.endpoints["in"])
    yield fwd, dash, job
    job.close()
    dash.stop()
    fwd.terminate()


def _page_step(browser):
    text = browser.js("document.getElementById('step').textContent")
    return int(text) if text and text != "-" else -1


def test_page_updates_live_and_screenshot(browser, live, tmp_path):
    _fwd, dash, job = live
    job.advance(20)
    browser.goto(dash.url)
    browser.wait_for("document.body.dataset.connected === 'true'")
    browser.wait_for("document.getElementById('step').textContent === '20'")
    updates = int(browser.js("document.body.dataset.updates"))
    # new steps reach the open page without a reload
    job.advance(40)
    browser.wait_for("document.getElementById('step').textContent === '60'")
    assert int(browser.js("document.body.dataset.updates")) > updates
    assert browser.js("document.getElementById('chart-loss').dataset.points") == "66"
    assert int(browser.js("document.getElementById('chart-accuracy').dataset.points")) == 66
    loss = float(browser.js("document.getElementById('latest-loss').textContent"))
    assert loss == pytest.approx(2.3 / (1 + 0.04 * 60), rel=1e-3)
    browser.wait_for("document.querySelectorAll('#ranks tbody tr.alive').length === 4")
    # a supervisor event shows up in the log, marked as an error
    job.pub.publish("supervise.job.exit", {"kind": "exit", "supervisor": "job",
                                           "child": "rank-3", "pid": 4242,
                                           "signal": "SIGKILL", "reason": "crash"},
                    kind="event")
    browser.wait_for("document.querySelector('#events li.error') !== null")
    assert "rank-3" in browser.js("document.querySelector('#events li.error').textContent")
    # a rank that stops beating turns stale
    job.beats[3].stop()
    browser.wait_for("document.querySelector('#ranks tr.stale') !== null", timeout=15)
    assert browser.js("document.querySelector('#ranks tr.stale').dataset.rank") == "3"
    assert browser.console_errors() == []
    shot = browser.screenshot(tmp_path / "dashboard.png")
    assert shot.stat().st_size > 10_000
    print(f"dashboard screenshot: {shot}")
    if os.environ.get("NONSENSE_UPDATE_SCREENSHOT"):
        # Refresh the picture in the docs on request; a test run leaves the tree alone.
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, RESULTS / "dashboard.png")


def test_page_reconnects_after_the_server_restarts(browser, live):
    fwd, dash, job = live
    job.advance(5)
    browser.goto(dash.url)
    browser.wait_for("document.getElementById('step').textContent === '5'")
    port = int(dash.url.rsplit(":", 1)[1].strip("/"))
    dash.stop()
    browser.wait_for("document.body.dataset.connected === 'false'", timeout=20)
    again = Dashboard(fwd.endpoints["out"], port=port).start()
    try:
        done = threading.Event()

        def feed():
            while not done.wait(0.1):
                job.advance()
        t = threading.Thread(target=feed)
        t.start()
        try:
            browser.wait_for("document.body.dataset.connected === 'true'", timeout=20)
            browser.wait_for("Number(document.getElementById('step').textContent) > 5")
        finally:
            done.set()
            t.join()
    finally:
        again.stop()
