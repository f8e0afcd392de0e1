"""`sare serve` on loopback: the JSON of a located photo, bad uploads answered with a 4xx while the service
stays up, the page in a real headless browser (Debian's chromium), a bounded load, and a replica killed
under load."""

from __future__ import annotations

import os
import shutil
import socket
import time

import pytest
import requests

from pipelines.locate.locate import Localizer
from pipelines.serve.load import run_load
from pipelines.serve.service import ServeConfig, start, stop
from tests.faults import pids_with_title


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(indexed_tiny_city):
    _, model, index, test = indexed_tiny_city
    config = ServeConfig(model=model, index=index, port=free_port(), replicas=2, replica_cpus=0.25, k=5,
                         max_upload_bytes=200_000, max_batch_size=4)
    url = start(config)
    yield url, model, index, test
    stop()


def post(url: str, data: bytes, content_type: str = "image/jpeg") -> requests.Response:
    return requests.post(f"{url}/locate", data=data, headers={"Content-Type": content_type}, timeout=60)


def test_a_posted_photo_gets_the_same_answer_as_sare_locate(service):
    url, model, index, test = service
    photo = test.q_paths[3]
    with open(photo, "rb") as f:
        response = post(url, f.read())
    assert response.status_code == 200, response.text
    served = response.json()
    from sare_core.models.images import load_rgb

    local = Localizer(model, index).locate([load_rgb(photo)], k=5)[0]
    assert [m["id"] for m in served["matches"]] == [m["id"] for m in local["matches"]]
    members = served["position"].pop("matches_in_group")
    assert members == local["position"].pop("matches_in_group")
    assert served["position"] == pytest.approx(local["position"])
    health = requests.get(f"{url}/health", timeout=30).json()
    assert health["status"] == "ok" and health["count"] == test.num_db and health["model_hash"] == local["model_hash"]


def test_a_multipart_upload_works_too(service):
    url, _, _, test = service
    with open(test.q_paths[0], "rb") as f:
        response = requests.post(f"{url}/locate", files={"photo": ("q.jpg", f, "image/jpeg")}, timeout=60)
    assert response.status_code == 200 and len(response.json()["matches"]) == 5


def test_bad_uploads_get_a_4xx_with_a_message_and_the_service_stays_up(service, toy_street_images):
    url, *_ = service
    cases = [
        (b"hello, I am text", "text/plain", 415, "not an image"),
        (b"", "image/jpeg", 400, "empty upload"),
        (b"\xff\xd8\xff\xe0 but then garbage", "image/jpeg", 400, "not a readable image"),
        (toy_street_images[0].read_bytes() * 20, "image/jpeg", 413, "over the limit"),
    ]
    for data, kind, status, message in cases:
        response = post(url, data, kind)
        assert response.status_code == status, (kind, response.text)
        assert message in response.json()["detail"]
    assert requests.post(f"{url}/locate", files={"other": ("a.txt", b"x")}, timeout=30).status_code == 400
    assert requests.get(f"{url}/health", timeout=30).json()["status"] == "ok"
    assert requests.get(f"{url}/images", params={"id": "../../etc/passwd"}, timeout=30).status_code == 404


def test_the_page_in_a_headless_browser(service, tmp_path):
    url, _, _, test = service
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test installs them as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(url + "/")
        assert "Where was this photo taken?" in browser.title
        browser.find_element(By.ID, "photo").send_keys(os.path.abspath(test.q_paths[5]))
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, 60).until(ec.visibility_of_element_located((By.ID, "result")))
        assert browser.find_element(By.ID, "position").text.startswith("Estimated at (")
        cards = browser.find_elements(By.CSS_SELECTOR, "#matches .match")
        assert len(cards) == 5
        WebDriverWait(browser, 30).until(lambda b: b.execute_script(
            "return [...document.querySelectorAll('#matches img')].every(i => i.complete && i.naturalWidth > 0)"))
        assert len(browser.find_elements(By.CSS_SELECTOR, "#map circle.match-point")) == 5
        assert browser.find_element(By.ID, "estimate").get_attribute("r")
        # A bad file shows the service's message on the page.
        bad = tmp_path / "notes.txt"
        bad.write_text("not a photo")
        browser.find_element(By.ID, "photo").send_keys(str(bad))
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "error").text)
        assert "not" in browser.find_element(By.ID, "error").text
    finally:
        browser.quit()


def test_a_bounded_load_has_no_errors(service):
    url, _, _, test = service
    photos = [open(p, "rb").read() for p in test.q_paths[:8]]
    report = run_load(url, photos, clients=4, seconds=5)
    assert report["errors"] == 0 and report["requests"] > 0
    assert 0 < report["p50_s"] <= report["p99_s"] and report["requests_per_s"] > 0


@pytest.mark.slow
def test_a_replica_killed_under_load_and_requests_keep_succeeding(service):
    url, _, _, test = service
    photos = [open(p, "rb").read() for p in test.q_paths[:8]]
    replicas = pids_with_title("ServeReplica:sare:localizer")
    assert len(replicas) == 2, replicas

    def kill_one(elapsed: float) -> bool:
        if elapsed >= 2.0 and pids_with_title("ServeReplica:sare:localizer") == replicas:
            os.kill(replicas[0], 9)
            return True
        return False

    report = run_load(url, photos, clients=4, seconds=10, during=kill_one)
    assert report["events"], "the replica was never killed"
    # Requests in flight on the killed replica may fail; every request sent a while after the kill succeeds.
    late = [r for r in report["log"] if r["sent_s"] > report["events"][0] + 3.0]
    assert late and all(r["ok"] for r in late), [r for r in late if not r["ok"]][:3]
    assert report["errors"] <= 4
    deadline = time.time() + 60
    while time.time() < deadline and len(pids_with_title("ServeReplica:sare:localizer")) < 2:
        time.sleep(0.5)
    assert len(pids_with_title("ServeReplica:sare:localizer")) == 2  # Serve started a new replica
