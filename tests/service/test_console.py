"""The web console at /console: its files and headers in-process, then the pages driven in headless Chromium
against a real server with the network cut (search, filter, rollback, a rebuild's progress, a training's loss
curve, then the pages a read-only access key opens), with a screenshot of each page under the test's output and
in out/console/."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN, TRAIN_EXAMPLES, ServeProcess, demo_documents, serving
from tests.service.test_auto_whitening import write_pairs

TOKEN = "console-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SHOTS = Path(__file__).resolve().parents[2] / "out" / "console"
KINDS = {"html": "text/html", "css": "text/css", "js": "text/javascript", "svg": "image/svg+xml"}


@pytest.mark.anyio
async def test_console_files_need_no_token_and_carry_a_strict_policy(tmp_path, tiny_model_dir):
    from whitevec.service.http.console_routes import FOLDER
    from whitevec.service.engine.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", model_dir=tiny_model_dir, admin_token=ADMIN["Authorization"][7:],
                        api_key="read-key", device="cpu")  # data routes need a credential: the console does not
    async with serving(settings) as (app, client):
        assert (await client.post("/search", json={"query": "x"})).status_code == 401
        page = await client.get("/console")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "unsafe-inline" not in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        scripts = re.findall(r"<script\b[^>]*>", page.text)
        assert scripts and all(" src=" in tag for tag in scripts)  # no inline code
        assert not re.search(r"\son[a-z]+\s*=", page.text)  # no inline handlers
        names = sorted(p.name for p in FOLDER.iterdir())
        assert {"index.html", "console.css", "console.js"} <= set(names)
        for name in names:
            r = await client.get(f"/console/{name}")
            assert r.status_code == 200, name
            assert r.headers["content-security-policy"] == policy
            assert r.headers["content-type"].startswith(KINDS[name.rsplit(".", 1)[1]]), name
            text = r.text.replace("http://www.w3.org/2000/svg", "")  # a namespace, not a place
            assert "http://" not in text and "https://" not in text, name  # nothing loads from elsewhere
            for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "localStorage", "sessionStorage",
                           "document.cookie", "eval("):
                assert banned not in text, (name, banned)
        for bad in ("nope.js", ".hidden.js", "console", "index.htm"):
            r = await client.get(f"/console/{bad}")
            assert r.status_code == 404 and "the console has no file" in r.json()["error"]["message"], bad
        for bad in ("..%2Fconsole_routes.py", "%2E%2E%2Fapp.py", "../app.py"):
            assert (await client.get(f"/console/{bad}")).status_code == 404, bad
        assert "/console" not in (await client.get("/openapi.json")).text  # not part of the API


# --- the browser ------------------------------------------------------------------------------------------

def chromium_or_skip() -> None:
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not on PATH: the console test drives Debian's chromium with "
                    "chromium-driver (apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")


def start_browser():
    """Headless Chromium that can reach 127.0.0.1 and nothing else (every other name resolves to nothing)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1360,1000",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--lang=en-US"):
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to sandbox as root (CI containers)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


class Page:
    """The console in one tab: waits, finds, clicks (again when a poll redrew the element), screenshots."""

    def __init__(self, driver, base: str, shots: Path) -> None:
        from selenium.webdriver.common.by import By

        self.driver, self.base, self.shots, self.by = driver, base, shots, By
        self.saved: list[Path] = []
        self.events: list[dict] = []

    def network(self) -> list[dict]:
        """Every DevTools event the tab logged so far (Chromium hands each out once: they are kept here)."""
        self.events += [json.loads(e["message"])["message"] for e in self.driver.get_log("performance")]
        return self.events

    def requests_since(self, start: int) -> list[tuple[str, str]]:
        """(method, URL) of the requests the page sent after event number `start`."""
        return [(m["params"]["request"]["method"], m["params"]["request"]["url"]) for m in self.network()[start:]
                if m["method"] == "Network.requestWillBeSent"]

    def wait(self, what, timeout: float = 90, message: str = ""):
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        def check(_):
            try:
                return what()
            except (StaleElementReferenceException, WebDriverException):
                return False
        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            check, message or f"{what} did not hold; page text: {self.text('main')[:2000]}")

    def all(self, css: str) -> list:
        return self.driver.find_elements(self.by.CSS_SELECTOR, css)

    def one(self, css: str):
        return self.wait(lambda: (self.all(css) or [None])[0], message=f"no {css}: {self.text('main')[:2000]}")

    def text(self, css: str) -> str:
        found = self.all(css)
        return found[0].text if found else ""

    def click(self, css: str) -> None:
        self.wait(lambda: self.one(css).click() is None)

    def type(self, css: str, text: str) -> None:
        field = self.one(css)
        field.clear()
        field.send_keys(text)

    def choose(self, css: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.one(css)).select_by_value(value)

    def go(self, fragment: str) -> None:
        """Navigate inside the page (the token stays in the tab's memory)."""
        self.driver.execute_script("location.hash = arguments[0]", fragment)

    def shoot(self, name: str) -> None:
        """The whole page, beyond the window's height."""
        size = self.driver.execute_script("return [document.documentElement.scrollWidth, "
                                          "document.documentElement.scrollHeight]")
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}})
        path = self.shots / f"{len(self.saved) + 1:02d}-{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        self.saved.append(path)


def first_hit(page: Page) -> str:
    return page.text(".results tbody tr:first-child td:nth-child(3)")


def hit_metadata(page: Page) -> list[str]:
    return [cell.text for cell in page.all(".results tbody td:nth-child(5)")]


def polyline_points(page: Page, css: str) -> int:
    lines = page.all(f"{css} polyline")
    return len(lines[0].get_attribute("points").split()) if lines else 0


def api_job(base: str, body: dict) -> str:
    r = httpx.post(f"{base}/admin/train", json=body, headers=AUTH, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def wait_state(base: str, job_id: str, states: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{base}/admin/jobs/{job_id}", headers=AUTH).json()
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def rebuild_now(base: str, body: dict) -> str:
    r = httpx.post(f"{base}/admin/index/rebuild", json=body, headers=AUTH, timeout=30)
    assert r.status_code == 202, r.text
    job = wait_state(base, r.json()["job_id"], ("succeeded", "failed"))
    assert job["state"] == "succeeded", job
    return job["result"]["version"]


@pytest.fixture
def console_server(tmp_path, tiny_model_dir, pairs_file):
    """A real server on the tiny model with two versions: v1 has every topic, v2 (active) lacks the animals."""
    chromium_or_skip()
    data = tmp_path / "data"
    (data / "import").mkdir(parents=True)
    shutil.copy(pairs_file, data / "import" / "eval.tsv")
    write_pairs(data / "import")  # pairs.tsv: enough labelled pairs for auto whitening
    more = [{"id": f"extra-{i}", "text": t, "metadata": {"topic": "extra"}}
            for i, t in enumerate(["a green tree by the river", "the blue car in the city", "rain and sun"])]
    (data / "import" / "more.jsonl").write_text("".join(json.dumps(d) + "\n" for d in more), encoding="utf-8")
    proc = ServeProcess(["--model", str(tiny_model_dir)], {"WHITEVEC_ADMIN_TOKEN": TOKEN, "WHITEVEC_DATA_DIR": str(data),
                                                          "WHITEVEC_DEVICE": "cpu", "WHITEVEC_TRAIN_THREADS": "1"})
    try:
        docs = demo_documents(2)
        whitening = {"beta": 0, "gamma": 0, "dim": 16}
        v1 = rebuild_now(proc.base, {"documents": docs, "whitening": whitening})
        v2 = rebuild_now(proc.base, {"documents": [d for d in docs if d["metadata"]["topic"] != "animals"],
                                     "whitening": whitening})
        yield proc.base, v1, v2
    finally:
        proc.stop()


@pytest.mark.browser
@pytest.mark.slow
def test_console_in_headless_chromium(console_server, tmp_path):
    base, v1, v2 = console_server
    shots = tmp_path / "console"
    shots.mkdir()
    driver = start_browser()
    page = Page(driver, base, shots)
    try:
        try:
            run_the_story(page, base, v1, v2)
            exact_integers(page)
            read_key_pass(page, base)
        except Exception:
            page.shoot("failure")  # what the page showed, for whoever reads the failure
            raise
        urls = {url for _, url in page.requests_since(0)}
        assert urls and all(u.startswith(base + "/") for u in urls), sorted(urls)  # nothing from elsewhere
        problems = [e["message"] for e in driver.get_log("browser")
                    if "Content Security Policy" in e["message"] or "Uncaught" in e["message"]]
        assert not problems, problems
    finally:
        driver.quit()
        SHOTS.mkdir(parents=True, exist_ok=True)
        for path in page.saved:
            shutil.copy(path, SHOTS / path.name)
    assert len(page.saved) == 16


def run_the_story(page: Page, base: str, v1: str, v2: str) -> None:
    from selenium.webdriver.common.keys import Keys

    passages = {"passages": {"max_tokens": 12, "overlap": 2}}
    assert httpx.put(f"{base}/admin/collections/other", json=passages, headers=AUTH, timeout=30).status_code == 201
    long = " ".join(f"the {w} sat on the mat." for w in ["dog", "car", "tree", "house"] * 4) + " 今天 天气 不错。"
    r = httpx.post(f"{base}/admin/collections/other/rebuild", headers=AUTH, timeout=30, json={"documents": [
        {"id": "long", "text": long}, {"id": "short", "text": "hello world"}, {"id": "sun", "text": "the sun is red"}]})
    assert wait_state(base, r.json()["job_id"], ("succeeded", "failed"))["state"] == "succeeded"
    page.driver.get(f"{base}/console#search")
    page.type("#token", TOKEN + Keys.ENTER)
    assert page.wait(lambda: "memory only" in page.text("#token-state"))

    # search: hits with score, text and metadata; the request shown as JSON and curl, without the token
    page.type("#query", "the cat sat on the mat")
    page.click("#run-search")
    page.wait(lambda: len(page.all(".results tbody tr")) == 10)
    before = first_hit(page)
    assert not before.startswith("animals") and f"from version {v2}" in page.text(".results")
    assert '"query": "the cat sat on the mat"' in page.text("pre.request")
    shell = page.all("pre.request")[1].text
    assert shell.startswith(f"curl -s {base}/search ") and TOKEN not in page.text("main")
    # the admin token is typed: the curl line names it, as the server's banner does, not the API key
    assert '-H "Authorization: Bearer $WHITEVEC_ADMIN_TOKEN"' in shell and "WHITEVEC_API_KEY" not in shell
    page.shoot("search")

    # the collection is chosen from the server's list, and the choice follows to the Versions page
    from selenium.webdriver.support.ui import Select

    page.wait(lambda: page.all("select[name=collection]"))
    choice = Select(page.driver.find_element("css selector", "select[name=collection]"))
    assert {o.get_attribute("value") for o in choice.options} == {"default", "other"}
    choice.select_by_value("other")
    assert "/collections/other/search" in page.all("pre.request")[1].text
    # a collection with passages: the matched passages are marked in the document's text, the best brightest
    page.type("#query", "今天 不错")
    Select(page.driver.find_element("css selector", "#mode")).select_by_value("lexical")
    page.click("#run-search")
    page.wait(lambda: page.all(".results mark.passage.best"))
    assert first_hit(page) == "long" and "不错" in page.text(".results mark.passage.best")
    assert page.text(".results tbody tr:first-child .hit-text").replace("\n", " ").startswith("the dog sat")
    page.shoot("search-passages")
    Select(page.driver.find_element("css selector", "#mode")).select_by_value("")
    page.type("#query", "the cat sat on the mat")
    assert page.driver.find_element("css selector", "nav a[data-page=versions]").get_attribute("href").endswith(
        "#versions/other")
    page.click("nav a[data-page=versions]")
    page.wait(lambda: "Versions of other" in page.text("main"))
    page.go("#versions/default")  # back to the collection the rest of the story uses
    page.wait(lambda: "Versions of default" in page.text("main"))
    page.go("#search")
    page.wait(lambda: page.all("select[name=collection]"))
    assert Select(page.driver.find_element("css selector", "select[name=collection]")).first_selected_option \
        .get_attribute("value") == "default"

    # a filter: a key no document has is answered with a warning above the (no) hits; then only matches
    page.click("#add-condition")
    page.type(".condition .filter-key", "topci")
    page.type(".condition .filter-value", "weather")
    page.click("#run-search")
    page.wait(lambda: 'filter key "topci"' in page.text(".answer .notice.warning"))
    assert "No document matches" in page.text(".answer") and not hit_metadata(page)
    page.type(".condition .filter-key", "topic")
    assert '"filter": {\n    "topic": "weather"\n  }' in page.text("pre.request")
    page.click("#run-search")
    page.wait(lambda: (m := hit_metadata(page)) and all(t == "topic weather" for t in m))
    assert not page.all(".answer .notice.warning")
    page.shoot("search-filtered")

    # versions: roll back with a confirm step, and search answers from the old version
    page.click("nav a[data-page=versions]")
    page.wait(lambda: len(page.all(".page-versions tbody tr")) == 2)
    assert v2 in page.text("tr.active") and "active" in page.text("tr.active .badge")
    page.click(f".activate-version[data-version='{v1}']")
    page.click(".confirm-activate")
    page.wait(lambda: f"Version {v1} is active" in page.text(".notice.ok") and v1 in page.text("tr.active"))
    page.shoot("versions")
    page.click("nav a[data-page=search]")
    page.click(".condition button")  # drop the filter: the form was kept while the tab is open
    page.click("#run-search")
    page.wait(lambda: f"from version {v1}" in page.text(".results"))
    assert first_hit(page) == "animals-0-0" != before

    # hybrid with explain: the fusion's controls appear; each hit shows both sides and the words it holds
    from selenium.webdriver.support.ui import Select

    Select(page.driver.find_element("css selector", "#mode")).select_by_value("hybrid")
    assert page.all("#fusion") and page.all("#rrf-k") and not page.all("#alpha")
    Select(page.driver.find_element("css selector", "#fusion")).select_by_value("weighted")
    page.click("#explain")
    page.click("#run-search")
    page.wait(lambda: "words" in page.text(".results thead") and len(page.all(".results tbody tr")) == 10)
    request = page.text("pre.request")
    assert '"mode": "hybrid"' in request and '"method": "weighted"' in request and '"explain": true' in request
    assert "cat" in page.text(".results tbody .terms") and "#1" in page.text(".results tbody")
    page.shoot("search-hybrid")
    Select(page.driver.find_element("css selector", "#mode")).select_by_value("")
    page.click("#explain")

    page.click("nav a[data-page=collections]")
    page.wait(lambda: "default" in page.text(".page-collections tbody") and v1 in page.text(".page-collections tbody"))
    page.shoot("collections")

    # a training job: its loss curve grows while it runs
    long_run = api_job(base, {"examples": TRAIN_EXAMPLES, "epochs": 100_000, "batch_size": 12, "lr": 1e-5,
                              "centre_lr": 1e-3, "warmup": 0.0, "eval_path": "eval.tsv"})
    page.go(f"#jobs/{long_run}")
    page.wait(lambda: polyline_points(page, ".loss-plot") >= 8, timeout=180)
    assert "running" in page.text(".job-state") and "steps" in page.text(".job-progress")
    page.shoot("training-live")

    # a rebuild started from the form waits behind it, then runs to done once the training is cancelled
    page.go("#versions/default")
    page.click("details.panel summary")
    page.type("#rebuild-path", "more.jsonl")
    page.choose("#rebuild-mode", "merge")
    page.choose("#rebuild-whitening", "auto")
    page.type("#rebuild-pairs", "pairs.tsv")
    assert json.loads(page.text("#rebuild-body")) == {"path": "more.jsonl", "mode": "merge",
                                                      "whitening": {"auto": {"pairs": "pairs.tsv"}}}
    page.click("#start-rebuild")
    page.wait(lambda: page.driver.execute_script("return location.hash").startswith("#jobs/"))
    rebuild_job = page.driver.execute_script("return location.hash").split("/", 1)[1]
    page.wait(lambda: "queued" in page.text(".job-state"))
    page.click("nav a[data-page=jobs]")
    page.wait(lambda: "running" in page.text(".page-jobs tbody") and "queued" in page.text(".page-jobs tbody"))
    page.shoot("jobs")
    page.go(f"#jobs/{long_run}")
    page.click(".cancel-job")
    page.wait(lambda: "cancelled" in page.text(".job-state"))
    assert polyline_points(page, ".loss-plot") >= 8  # the curve seen stays
    page.go(f"#jobs/{rebuild_job}")
    page.wait(lambda: "succeeded" in page.text(".job-state") and page.text(".job-progress") == "done", timeout=180)
    # 24 documents + 3 merged
    page.wait(lambda: len(page.all(".tuning-plot .series")) == 25 and page.all(".tuning-plot polygon.mark"))
    assert page.driver.execute_script("return [...document.querySelectorAll('td')].find("
                                      "td => td.textContent === 'documents').nextElementSibling.textContent") == "27"
    page.shoot("rebuild-job")

    # auto search, started through the API: the job page shows its table and hit@1 against alpha
    r = httpx.post(f"{base}/admin/index/rebuild", headers=AUTH, timeout=30,
                   json={"reencode": False, "search": {"auto": {"pairs": "pairs.tsv"}}})
    assert r.status_code == 202, r.text
    search_job = r.json()["job_id"]
    wait_state(base, search_job, ("succeeded",), timeout=180)
    page.go(f"#jobs/{search_job}")
    page.wait(lambda: page.all(".search-plot polygon.mark") and "Auto search" in page.text("main"))
    assert "★" in page.text("main") and "held-out hit@1" in page.text("main")
    page.shoot("search-tuning-job")

    # a finished training opened later, in a fresh page that never watched it run (reloaded: the token is
    # typed again): its loss curve comes from the job's record, and before and after on the eval pairs
    short_run = api_job(base, {"examples": TRAIN_EXAMPLES, "epochs": 15, "batch_size": 12, "lr": 1e-3, "warmup": 0.0,
                               "eval_path": "eval.tsv"})
    loss = wait_state(base, short_run, ("succeeded",), timeout=180)["result"]["report"]["loss"]
    assert len(loss) >= 2 and all(len(pair) == 2 for pair in loss), loss
    page.go(f"#jobs/{short_run}")
    page.driver.refresh()
    page.type("#token", TOKEN + Keys.ENTER)
    page.wait(lambda: "Before and after" in page.text("main") and "succeeded" in page.text(".job-state"))
    page.wait(lambda: polyline_points(page, ".loss-plot") == len(loss))
    assert "did not watch it run" not in page.text("main") and "sampled while" not in page.text(".loss-plot")
    assert f"{len(loss)} points" in page.driver.execute_script(
        "return document.querySelector('.loss-plot svg > title').textContent")
    cells = [c.text for c in page.all(".page-jobs table tbody tr:first-child td")]
    assert cells[0].startswith("Spearman") and cells[1] != "—" and cells[2] != "—", cells
    page.shoot("training-done")

    page.click("nav a[data-page=health]")
    page.wait(lambda: "Ready" in page.text(".status-line") and "requests since start" in page.text("main"))
    assert "Serving model" in page.text("ul.words")
    page.shoot("health")


def refused_credentials(base: str) -> float:
    """whitevec_auth_failures_total over every reason, from /metrics."""
    text = httpx.get(f"{base}/metrics", headers=AUTH, timeout=30).text
    counts = re.findall(r"^whitevec_auth_failures_total\{[^}]*\} (\S+)$", text, re.MULTILINE)
    return sum(float(n) for n in counts)


def exact_integers(page: Page) -> None:
    """The page reads and writes JSON through one pair of functions that keep integers beyond 2^53 exact
    (a Number would round 9007199254740993 to ...992, and a filter typed from it would match a neighbour)."""
    got = page.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        import("/console/ui.js").then(m => {
          const v = m.parseJSON('{"id": 9007199254740993, "n": [-9223372036854775807, 2], "f": 1.5, "e": 1e300}');
          done([m.toJSON(v), typeof v.id, typeof v.n[1], typeof v.e]);
        }).catch(e => done(String(e)));""")
    assert got == ['{"id":9007199254740993,"n":[-9223372036854775807,2],"f":1.5,"e":1e+300}', "bigint", "number",
                   "number"], got


def read_key_pass(page: Page, base: str) -> None:
    """A read-only access key in a fresh page: Search and Health work; Versions, Jobs and Collections say they need
    the admin token, and the server is refused at most once (when the console learns the key is not the admin
    token), never again on later pages or polls."""
    from selenium.webdriver.common.keys import Keys

    made = httpx.post(f"{base}/admin/keys", json={"collections": ["default"], "access": "read", "name": "console"},
                      headers=AUTH, timeout=30)
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    refused = refused_credentials(base)
    page.go("#search")
    page.driver.refresh()
    start = len(page.network())
    page.wait(lambda: "none" in page.text("#token-state") and page.all("pre.request"))
    assert "Authorization" not in page.all("pre.request")[1].text  # no token typed: no header in the curl

    page.type("#token", key + Keys.ENTER)
    page.wait(lambda: "not the admin token" in page.text("#token-state"))
    page.type("#query", "will it rain tomorrow")
    page.click("#run-search")
    page.wait(lambda: len(page.all(".results tbody tr")) == 10)
    assert "hits from version" in page.text(".results") and not page.all(".results .notice.error")
    shell = page.all("pre.request")[1].text
    assert '-H "Authorization: Bearer $WHITEVEC_API_KEY"' in shell and key not in page.text("body")
    page.shoot("read-key-search")

    page.click("nav a[data-page=health]")
    page.wait(lambda: "Ready" in page.text(".status-line") and "only the admin token reads them" in page.text("main"))
    assert "Serving model" in page.text("ul.words") and not page.all(".notice.error")
    page.shoot("read-key-health")

    for name, shot in (("versions", True), ("jobs", True), ("collections", False), ("versions", False)):
        page.click(f"nav a[data-page={name}]")
        page.wait(lambda name=name: page.all(f".page-{name} .needs-admin"))
        assert f"The {name.title()} page needs the admin token" in page.text(".needs-admin")
        assert "not the admin token" in page.text(".needs-admin")
        assert not page.all("main table") and not page.all(".notice.error"), page.text("main")
        if shot:
            page.shoot(f"read-key-{name}")
    page.go("#jobs/no-such-job")  # a job's page too, with no call for it
    page.wait(lambda: "The Jobs page needs the admin token" in page.text(".needs-admin"))
    time.sleep(2)  # time for any poll that would ask again

    admin_calls = [(method, url) for method, url in page.requests_since(start) if "/admin/" in url]
    assert admin_calls == [("GET", f"{base}/admin/collections")], admin_calls  # asked once, then remembered
    assert refused_credentials(base) - refused == 1
    searches = [url for method, url in page.requests_since(start) if url.endswith("/search")]
    assert searches == [f"{base}/search"], searches
