"""The web UI (``/ui``) in headless Chromium, through the real Serve app.

One browser, one context per user: the owner of a cube walks every view (cubes, a cube's memories, a
memory's versions and provenance, search with scores, the audit log, the scheduler's view, adapters with a
training job followed live, the change feed receiving an add made from here), an administrator sees the
workers, and a second user without a grant gets the denied view. Each view's screenshot is saved under
``tests/artifacts/ui/``. No console error and no page error may occur, except Chromium's own "Failed to
load resource" line for the refusals the scenario provokes (401, 403, 404).

Debian's chromium is used (Playwright cannot download its own browser here); it is installed when missing
and the tests run as root, else the browser test is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import bearer, user_key, wait_for_condition

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "ui"
CUBE, SHARED = "ui-cube", "ui-shared"
OWNER, STRANGER = "ui-owner", "ui-stranger"
# Chromium logs every 4xx answer to a fetch as a console error; the refusals asked for below are expected.
EXPECTED = re.compile(r"Failed to load resource: the server responded with a status of (401|403|404)\b")
TINY = {"steps": "2", "rank": "2"}  # a training job that ends in seconds


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run = ["apt-get", "install", "-y", "-q", package]
    if subprocess.run(run, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        subprocess.run(run, env=env, capture_output=True, timeout=900)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed if it is missing (root, as in CI and on these machines)."""
    pytest.importorskip("playwright.sync_api", reason="the UI tests need Playwright (pip install playwright)")
    if not CHROMIUM.exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        _apt_install("chromium")
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's chromium is not at {CHROMIUM} and could not be installed (apt-get install chromium)")
    return str(CHROMIUM)


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def keys(base_url: str, admin_key: str) -> dict[str, str]:
    """Two ordinary users' keys, and the administrator's."""
    return {"admin": admin_key, OWNER: user_key(base_url, OWNER), STRANGER: user_key(base_url, STRANGER)}


@pytest.fixture(scope="module")
def owner(base_url: str, keys: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers=bearer(keys[OWNER]), timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def memories(owner: httpx.Client) -> dict[str, str]:
    """The owner's cube with a few memories, one of them updated (two versions); a second cube shared with
    the stranger, read only."""
    for cube in (CUBE, SHARED):
        r = owner.post("/v1/cubes", json={"id": cube, "name": f"UI tests: {cube}"})
        assert r.status_code == 201, r.text
    assert owner.put(f"/v1/cubes/{SHARED}/grants/{STRANGER}", json={"role": "read"}).status_code == 200
    texts = {
        "keeper": "The lighthouse keeper is called Marguerite.",
        "ferry": "The ferry leaves the harbour at 7:15 every morning.",
        "paint": "The lighthouse is painted red.",
    }
    ids = {}
    for name, text in texts.items():
        source = {"source_type": "message", "source_id": f"msg-{name}", "speaker": "Odile"}
        r = owner.post(f"/v1/cubes/{CUBE}/memories", json={"text": text, "tags": ["island"], "source": source})
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    r = owner.patch(f"/v1/cubes/{CUBE}/memories/{ids['paint']}", json={"text": "The lighthouse is painted white."})
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    return ids


def test_ui_files_are_served_without_a_key(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as anonymous:
        page = anonymous.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'id="sign-in"' in page.text and "script-src 'self'" in page.headers["content-security-policy"]
        assert anonymous.get("/ui/").status_code == 200
        landing = anonymous.get("/", follow_redirects=False)  # the server's address in a browser: the UI
        assert landing.status_code == 307 and landing.headers["location"] == "/ui"
        for name, kind in [("app.js", "text/javascript"), ("api.js", "text/javascript"), ("app.css", "text/css")]:
            r = anonymous.get(f"/ui/static/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind), name
        # outside the folder (the client keeps %2F: no dot segment is resolved before the server), hidden, odd types
        outside = ["nope.js", "..%2Froutes%2Fui.py", "%2E%2E%2Fauth.py", ".hidden.js", "index.py", "app.js.map"]
        for name in outside:
            assert anonymous.get(f"/ui/static/{name}").status_code == 404, name
        assert anonymous.get("/v1/cubes").status_code == 401  # the data stays behind keys


class Tab:
    """One user's page, with what its console said."""

    def __init__(self, browser: Any, base_url: str, who: str) -> None:
        self.who = who
        self.context = browser.new_context(viewport={"width": 1360, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.goto(f"{base_url}/ui")

    def sign_in(self, key: str) -> None:
        self.page.fill("#key", key)
        self.page.click("#sign-in")

    def visit(self, hash_: str) -> None:
        self.page.evaluate("h => { location.hash = h; }", hash_)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not EXPECTED.search(e)]


@pytest.mark.timeout(600)  # the training job it starts takes most of it on 2 cores
def test_the_ui_walks_every_view(
    chromium: str,
    browser: Any,
    base_url: str,
    keys: dict[str, str],
    owner: httpx.Client,
    memories: dict[str, str],
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tabs: list[Tab] = []

    # -- sign in: a wrong key is refused with the server's message, the owner's key is taken
    tab = Tab(browser, base_url, OWNER)
    tabs.append(tab)
    page = tab.page
    tab.sign_in("mrk_000000000000_not-a-key-anyone-holds")
    expect(page.locator("#signin-error")).to_contain_text("Not signed in")
    tab.sign_in(keys[OWNER])
    expect(page.locator("#whoami")).to_contain_text(OWNER)

    # -- cubes, then one cube: its memories with kind, state, tags, versions and usage
    expect(page.locator(f'#cubes tr[data-id="{CUBE}"]')).to_contain_text("ui-owner")
    tab.shot("cubes")
    page.locator(f'#cubes tr[data-id="{CUBE}"] a.cube-link').click()
    expect(page.locator("#cube-id")).to_have_text(CUBE)
    paint = page.locator(f'#memories tr[data-id="{memories["paint"]}"]')
    expect(paint).to_contain_text("painted white")
    expect(paint.locator(".versions")).to_have_text("2")
    expect(page.locator("#memories")).to_contain_text("The ferry leaves the harbour")
    expect(page.locator("#memories thead")).to_contain_text("Retrievals")
    tab.shot("cube")

    # -- a memory: its versions (history) and provenance
    paint.locator("a.memory-link").click()
    detail = page.locator("#memory-detail")
    expect(detail.locator("#version-count")).to_have_text("2")
    expect(detail.locator("#versions tbody tr")).to_have_count(2)
    expect(detail.locator("#versions")).to_contain_text("painted red")
    expect(detail.locator("#provenance")).to_contain_text(OWNER)
    tab.shot("memory")

    # -- search: hits with their scores
    tab.visit(f"#/search/{CUBE}")
    page.fill("#query", "When does the ferry leave?")
    page.click("#search-go")
    first = page.locator("#results .result").first
    expect(first).to_contain_text("ferry")
    shown, score = first.locator(".score").inner_text(), first.get_attribute("data-score")
    assert score is not None and float(shown) == pytest.approx(float(score), abs=1e-4)
    tab.shot("search")

    # -- the cube's audit log (the owner holds admin on it)
    tab.visit(f"#/audit/{CUBE}")
    expect(page.locator("#audit")).to_contain_text("memory.update")
    expect(page.locator("#audit")).to_contain_text("cube.create")
    tab.shot("audit")

    # -- the scheduler's view: the cluster's part is an administrator's; the cube's decisions and usage are not
    tab.visit(f"#/scheduler/{CUBE}")
    expect(page.locator("#scheduler #cluster")).to_contain_text("administrators")
    expect(page.locator("#scheduler #cube-scheduling")).to_contain_text("Decisions")

    # -- adapters: none yet; a training job started here is followed while it runs
    tab.visit(f"#/adapters/{CUBE}")
    expect(page.locator("#adapters")).to_contain_text(CUBE)
    expect(page.locator("#adapter-slot")).to_contain_text("No adapters yet")
    page.fill("#train-steps", TINY["steps"])
    page.fill("#train-rank", TINY["rank"])
    page.uncheck("#train-examine")
    page.uncheck("#train-activate")
    page.click("#train")
    job = page.locator("#jobs .job")
    expect(job).to_have_count(1)
    page.wait_for_function("() => Number(document.querySelector('#jobs .job')?.dataset.polls) >= 2", timeout=20_000)
    tab.shot("adapters-training")

    # -- the change feed: an add made from here appears live
    tab.visit(f"#/changes/{CUBE}")
    expect(page.locator('#changes-status[data-state="live"]')).to_be_visible()
    r = owner.post(f"/v1/cubes/{CUBE}/memories", json={"text": "A new buoy marks the reef north of the island."})
    assert r.status_code == 201, r.text
    change = page.locator(f'#changes .change[data-id="{r.json()["id"]}"]')
    expect(change).to_contain_text("buoy")
    expect(change).to_contain_text("add")
    tab.shot("changes")

    # -- an administrator: what lives where (workers, caches, budgets), and every cube's audit
    with httpx.Client(base_url=base_url, headers=bearer(keys["admin"]), timeout=60) as admin:

        def workers() -> int:
            status = admin.get("/v1/status").json()
            return len((status.get("scheduler") or {}).get("workers") or [])

        wait_for_condition(lambda: workers() > 0, timeout=240, interval=1.0)
        count = workers()
    boss = Tab(browser, base_url, "admin")
    tabs.append(boss)
    boss.sign_in(keys["admin"])
    expect(boss.page.locator("#whoami")).to_contain_text("administrator")
    boss.visit("#/scheduler")
    expect(boss.page.locator("#workers tbody tr")).to_have_count(count)
    expect(boss.page.locator("#budgets")).to_contain_text("KV on disk")
    expect(boss.page.locator("#caches")).to_be_attached()
    boss.shot("scheduler")
    boss.visit("#/audit")
    expect(boss.page.locator("#audit tbody tr").first).to_be_visible()

    # -- a user without a grant: the cube is not there for it; a read grant is not enough for the audit
    other = Tab(browser, base_url, STRANGER)
    tabs.append(other)
    other.sign_in(keys[STRANGER])
    expect(other.page.locator(f'#cubes tr[data-id="{SHARED}"]')).to_be_visible()
    expect(other.page.locator(f'#cubes tr[data-id="{CUBE}"]')).to_have_count(0)
    other.visit(f"#/cube/{CUBE}")
    expect(other.page.locator("#denied")).to_contain_text(f"cube {CUBE} not found")
    other.shot("denied")
    other.visit(f"#/audit/{SHARED}")
    expect(other.page.locator("#denied")).to_contain_text("needs admin")
    other.shot("denied-audit")
    other.page.click("#sign-out")
    expect(other.page.locator("#signin")).to_be_visible()

    # -- back to the owner's adapters (the job trained meanwhile): it has finished and its adapter is listed
    tab.visit(f"#/adapters/{CUBE}")
    expect(page.locator('#jobs .job[data-state="succeeded"]')).to_have_count(1, timeout=240_000)
    expect(page.locator("#adapter-list tbody tr")).to_have_count(1)
    expect(page.locator("#active-adapter")).to_have_text("base model")
    tab.shot("adapters")

    for t in tabs:
        t.context.close()
    for t in tabs:
        assert t.unexpected() == [], (t.who, t.unexpected())
