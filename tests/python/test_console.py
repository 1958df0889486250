"""Browser checks of the web console: a real `plinth serve` driven by headless Chromium.

Needs Chromium and its driver (Debian: `apt-get install chromium chromium-driver`) and the
Python packages `pytest` and `selenium`. Selenium is pointed at the installed driver and
browser, so it never downloads anything. Override the paths with CHROMEDRIVER / CHROMIUM;
PLINTH_SKIP_BROWSER_TESTS=1 skips this module.

A screenshot of the overview is written to target/console-overview.png; with
PLINTH_UPDATE_SCREENSHOTS=1 it is also copied to docs/console-overview.png.
"""

import os
import pathlib
import re
import shutil
import sys
import tempfile

import pytest

try:
    from conftest import ROOT, start_server, stop_server
except ImportError:  # pytest's importlib import mode leaves this directory off sys.path
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from conftest import ROOT, start_server, stop_server

if os.environ.get("PLINTH_SKIP_BROWSER_TESTS") == "1":
    pytest.skip("PLINTH_SKIP_BROWSER_TESTS=1", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = ROOT / "target" / "console-overview.png"
DOCS_SCREENSHOT = ROOT / "docs" / "console-overview.png"


@pytest.fixture
def browser():
    if not pathlib.Path(CHROMEDRIVER).exists():
        pytest.fail(
            f"{CHROMEDRIVER} not found: install chromium and chromium-driver, set CHROMEDRIVER, "
            "or set PLINTH_SKIP_BROWSER_TESTS=1 to skip the browser checks"
        )
    # Never let Selenium Manager look anything up on the network.
    os.environ["SE_OFFLINE"] = "true"
    profile = tempfile.mkdtemp(prefix="plinth-chromium-")
    options = webdriver.ChromeOptions()
    if pathlib.Path(CHROMIUM).exists():
        options.binary_location = CHROMIUM
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def fresh_server():
    """A server of its own with nothing applied."""
    server = start_server()
    yield server
    stop_server(server)


# ----- helpers -----


def wait_for(driver, condition, timeout=15):
    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def h1(driver):
    return driver.find_element(By.TAG_NAME, "h1").text


def wait_h1(driver, text):
    wait_for(driver, lambda d: _h1_or_none(d) == text)


def _h1_or_none(driver):
    try:
        return h1(driver)
    except (NoSuchElementException, StaleElementReferenceException):
        # The page is changing under us; look again.
        return None
    except WebDriverException as e:
        # Chromium reports an element of the page just replaced this way, not as stale.
        if "does not belong to the document" in str(e):
            return None
        raise


def path_of(driver):
    url = driver.current_url
    rest = url.split("://", 1)[1]
    return "/" + rest.split("/", 1)[1] if "/" in rest else "/"


def sign_in(driver, server, token):
    driver.get(server.url + "/console/login")
    wait_h1(driver, "Sign in")
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "sign-in").click()


def sign_in_ok(driver, server, token):
    sign_in(driver, server, token)
    wait_h1(driver, "Overview")
    assert path_of(driver) == "/console"


def nav(driver, link_id, title):
    driver.find_element(By.ID, link_id).click()
    wait_h1(driver, title)


def rows(driver, table_id):
    return driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")


def row_names(driver, table_id):
    return [r.get_attribute("data-name") for r in rows(driver, table_id)]


def card_value(driver, card_id):
    return driver.find_element(By.CSS_SELECTOR, f"#{card_id} .value").text


def svg_texts(driver, svg_id):
    return [t.get_attribute("textContent") for t in driver.find_elements(By.CSS_SELECTOR, f"svg#{svg_id} text")]


def has(driver, css):
    return len(driver.find_elements(By.CSS_SELECTOR, css)) > 0


def create_token(server, name, team, role):
    status, body = server.request("POST", "/api/v1/tokens", {"name": name, "team": team, "role": role})
    assert status == 201, body
    return body["token"], body["info"]["id"]


def save_screenshot(driver):
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    # Capture the whole page, not just the first 900 pixels of it.
    height = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)")
    metrics = {"width": 1280, "height": max(900, int(height)), "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        driver.execute_script("window.scrollTo(0, 0)")
        assert driver.save_screenshot(str(SCREENSHOT)), "screenshot failed"
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert SCREENSHOT.stat().st_size > 10_000
    if os.environ.get("PLINTH_UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SCREENSHOT, DOCS_SCREENSHOT)


# ----- tests -----


def test_pages_redirect_to_login_without_a_session(browser, plinth_server):
    for path in ["/", "/console", "/console/pools", "/console/teams", "/console/queues", "/console/audit"]:
        browser.get(plinth_server.url + path)
        wait_h1(browser, "Sign in")
        assert path_of(browser) == "/console/login", path
        assert not has(browser, "#nav")
        assert not has(browser, "#login-error")


def test_wrong_token_shows_the_login_error(browser, plinth_server):
    sign_in(browser, plinth_server, "plt_000000000000_" + "0" * 64)
    wait_for(browser, lambda d: has(d, "#login-error"))
    assert h1(browser) == "Sign in"
    assert "Sign-in failed" in browser.find_element(By.ID, "login-error").text
    assert browser.get_cookie("plinth_session") is None
    # Still signed out: a page sends us back to the form.
    browser.get(plinth_server.url + "/console/pools")
    wait_h1(browser, "Sign in")


def test_admin_walks_every_page(browser, demo_server):
    sign_in_ok(browser, demo_server, demo_server.token)
    cookie = browser.get_cookie("plinth_session")
    assert cookie is not None and cookie["httpOnly"] and cookie.get("sameSite") == "Strict"
    assert browser.find_element(By.ID, "identity-role").text == "admin"
    assert "active" in browser.find_element(By.ID, "nav-overview").get_attribute("class")

    # Overview: counts of the demo data, the capacity chart, recent activity.
    assert has(browser, "#overview-cards")
    assert card_value(browser, "stat-pools") == "2"
    assert card_value(browser, "stat-teams") == "2"
    assert card_value(browser, "stat-queues") == "2"
    assert card_value(browser, "stat-nodes") == "6"
    assert card_value(browser, "stat-gpus") == "16"  # 2 nodes x 8
    assert card_value(browser, "stat-cpus") == "320"  # 2 x 32 + 4 x 64
    texts = svg_texts(browser, "overview-chart")
    assert "gpu-a" in texts and "cpu-b" in texts
    assert "16 GPUs" in texts and "256 cores" in texts and "64 cores" in texts
    recent = browser.find_element(By.ID, "recent-table").text
    assert "resource.create" in recent and "product-serve" in recent
    save_screenshot(browser)

    # Pools: a row per pool, the GPU chart.
    nav(browser, "nav-pools", "Pools")
    assert row_names(browser, "pools-table") == ["cpu-b", "gpu-a"]
    gpu_row = browser.find_element(By.ID, "pool-gpu-a").text
    assert "nvidia-h100 × 8" in gpu_row and "spot" in gpu_row and "eu-west" in gpu_row
    assert "CPU only" in browser.find_element(By.ID, "pool-cpu-b").text
    texts = svg_texts(browser, "pool-gpu-chart")
    assert "16 GPUs" in texts and "0 GPUs" in texts
    assert "6 nodes · 16 accelerators · 320 CPU cores" in browser.find_element(By.ID, "pools-summary").text

    # Teams.
    nav(browser, "nav-teams", "Teams")
    assert sorted(row_names(browser, "teams-table")) == ["product", "research"]
    research = browser.find_element(By.ID, "team-research").text
    assert "Research" in research and "ada@example.com" in research

    # Queues: quotas per pool, cohort, priority, the quota chart.
    nav(browser, "nav-queues", "Queues")
    assert sorted(row_names(browser, "queues-table")) == ["product-serve", "research-train"]
    serve = browser.find_element(By.ID, "queue-product-serve")
    quotas = {q.get_attribute("data-pool"): q.text for q in serve.find_elements(By.CSS_SELECTOR, "li.quota")}
    assert quotas == {"gpu-a": "gpu-a: 4 GPUs", "cpu-b": "cpu-b: 0 GPUs 64 CPUs"}
    assert "shared" in serve.text and "100" in serve.text
    train = browser.find_element(By.ID, "queue-research-train").text
    assert "gpu-a: 8 GPUs" in train and "10" in train
    # The usage chart: one bar per queue, its value "USED of NOMINAL GPUs".
    texts = svg_texts(browser, "queue-usage-chart")
    assert "research-train" in texts and "product-serve" in texts
    assert any(re.fullmatch(r"[0-9.]+ of 8 GPUs.*", t) for t in texts), texts
    assert any(re.fullmatch(r"[0-9.]+ of 4 GPUs.*", t) for t in texts), texts

    # Audit: the applies are there, and the filters narrow them.
    nav(browser, "nav-audit", "Audit log")
    table = browser.find_element(By.ID, "audit-table").text
    assert "resource.create" in table and "bootstrap" in table
    kinds = {r.find_elements(By.TAG_NAME, "td")[4].text.split("/")[0] for r in rows(browser, "audit-table")}
    assert {"Pool", "Team", "Queue", "Token"} <= kinds
    browser.find_element(By.ID, "filter-kind").send_keys("Queue")
    browser.find_element(By.ID, "apply-filters").click()
    wait_for(browser, lambda d: "kind=Queue" in d.current_url and has(d, "#clear-filters"))
    kinds = [r.find_elements(By.TAG_NAME, "td")[4].text for r in rows(browser, "audit-table")]
    assert sorted(kinds) == ["Queue/product-serve", "Queue/research-train"]
    assert browser.find_element(By.ID, "filter-kind").get_attribute("value") == "Queue"


def test_audit_verify_shows_intact(browser, demo_server):
    sign_in_ok(browser, demo_server, demo_server.token)
    nav(browser, "nav-audit", "Audit log")
    browser.find_element(By.ID, "verify-chain").click()
    wait_h1(browser, "Audit chain verification")
    result = browser.find_element(By.ID, "verify-result")
    assert result.get_attribute("data-ok") == "true"
    assert "Chain intact" in result.text


def test_viewer_sees_only_their_team(browser, demo_server):
    token, _ = create_token(demo_server, "ada-viewer", "research", "viewer")
    sign_in_ok(browser, demo_server, token)
    assert browser.find_element(By.ID, "identity-role").text == "viewer"
    assert "research" in browser.find_element(By.ID, "identity-team").text
    assert card_value(browser, "stat-queues") == "1"
    assert has(browser, "#recent-hidden") and not has(browser, "#recent-table")

    nav(browser, "nav-queues", "Queues")
    assert row_names(browser, "queues-table") == ["research-train"]
    assert "product-serve" not in browser.page_source

    nav(browser, "nav-teams", "Teams")
    assert row_names(browser, "teams-table") == ["research"]

    # Pools are cluster-scoped: everyone sees them.
    nav(browser, "nav-pools", "Pools")
    assert row_names(browser, "pools-table") == ["cpu-b", "gpu-a"]

    nav(browser, "nav-audit", "Audit log")
    message = browser.find_element(By.ID, "audit-permission").text
    assert "cannot read the audit log" in message and "maintainer or admin required" in message
    assert not has(browser, "#audit-table") and not has(browser, "#verify-chain")


def test_revoked_token_is_signed_out_on_the_next_page(browser, demo_server):
    token, token_id = create_token(demo_server, "short-lived", "product", "maintainer")
    sign_in_ok(browser, demo_server, token)
    nav(browser, "nav-queues", "Queues")
    assert row_names(browser, "queues-table") == ["product-serve"]
    status, body = demo_server.request("DELETE", f"/api/v1/tokens/{token_id}")
    assert status == 200, body
    browser.refresh()
    wait_h1(browser, "Sign in")
    assert path_of(browser) == "/console/login"
    assert browser.get_cookie("plinth_session") is None
    # Signing in again with it fails with a clear message.
    sign_in(browser, demo_server, token)
    wait_for(browser, lambda d: has(d, "#login-error"))
    assert "revoked" in browser.find_element(By.ID, "login-error").text


def test_sign_out(browser, demo_server):
    sign_in_ok(browser, demo_server, demo_server.token)
    browser.find_element(By.ID, "sign-out").click()
    wait_h1(browser, "Sign in")
    assert path_of(browser) == "/console/login"
    assert browser.get_cookie("plinth_session") is None
    browser.get(demo_server.url + "/console/teams")
    wait_h1(browser, "Sign in")


def test_pages_render_with_no_objects(browser, fresh_server):
    sign_in_ok(browser, fresh_server, fresh_server.token)
    assert card_value(browser, "stat-pools") == "0"
    assert "No pools yet — apply one with plinth apply -f pools.yaml" in browser.find_element(By.ID, "pools-empty").text
    nav(browser, "nav-pools", "Pools")
    assert "No pools yet — apply one with plinth apply -f pools.yaml" in browser.find_element(By.ID, "pools-empty").text
    assert not has(browser, "#pools-table") and not has(browser, "svg#pool-gpu-chart")
    nav(browser, "nav-teams", "Teams")
    assert "No teams yet" in browser.find_element(By.ID, "teams-empty").text
    nav(browser, "nav-queues", "Queues")
    assert "No queues yet" in browser.find_element(By.ID, "queues-empty").text
    nav(browser, "nav-contracts", "Data contracts")
    assert "No data contracts yet" in browser.find_element(By.ID, "contracts-empty").text
    assert has(browser, "#versions-empty")
    nav(browser, "nav-deployments", "Deployments")
    assert "No deployments yet" in browser.find_element(By.ID, "deployments-empty").text
    nav(browser, "nav-models", "Models")
    assert "No registered models yet" in browser.find_element(By.ID, "models-empty").text
    nav(browser, "nav-cost", "Cost")
    assert "No usage in this period" in browser.find_element(By.ID, "cost-empty").text
    assert "Nothing in this period" in browser.find_element(By.ID, "units-inferences-empty").text
    assert not has(browser, "svg#cost-unit-chart")
    assert "No budgets" in browser.find_element(By.ID, "budgets-empty").text
    nav(browser, "nav-audit", "Audit log")
    assert [r.get_attribute("data-seq") for r in rows(browser, "audit-table")] == ["1"]


def test_models_page_shows_stages_gate_verdicts_and_lineage(browser, fresh_server):
    s = fresh_server
    policy = {"apiVersion": "plinth/v1", "kind": "ReleasePolicy", "metadata": {"name": "churn"},
              "spec": {"model": "churn", "metrics": [{"metric": "auc", "min": 0.8}]}}
    status, body = s.request("POST", "/api/v1/apply", {"documents": [{"document": policy}]})
    assert status == 200, body
    for auc in (0.9, 0.7):
        status, body = s.request("POST", "/api/v1/models/churn/versions",
                                 {"source": "s3://m/churn", "manifest": {"evalMetrics": {"auc": auc}, "codeCommit": "c0ffee"}})
        assert status == 201, body
    status, body = s.request("POST", "/api/v1/models/churn/versions/1/promote", {"to": "production"})
    assert status == 200, body
    sign_in_ok(browser, s, s.token)
    nav(browser, "nav-models", "Models")
    assert row_names(browser, "models-table") == ["churn"]
    assert browser.find_element(By.CSS_SELECTOR, "#model-churn td[data-production]").get_attribute("data-production") == "1"
    browser.find_element(By.CSS_SELECTOR, "#model-churn a.name").click()
    wait_h1(browser, "churn")
    assert browser.find_element(By.CSS_SELECTOR, "[data-stage=production]").text == "v1"
    gates = {r.get_attribute("data-version"): r.find_element(By.CSS_SELECTOR, "[data-gates]").get_attribute("data-gates")
             for r in rows(browser, "model-versions-table")}
    assert gates == {"1": "passed", "2": "failed"}
    failing = browser.find_element(By.CSS_SELECTOR, "#version-2 li.fail").text
    assert failing == "FAIL metric auc >= 0.8: auc = 0.7"
    browser.find_element(By.CSS_SELECTOR, "#version-1 a[href^='/console/lineage']").click()
    wait_for(browser, lambda d: "model:churn@1" in d.page_source)
    assert "/console/lineage" in path_of(browser)


def test_contracts_page_shows_dataset_versions(browser, tmp_path):
    s = start_server()
    try:
        contracts_page_checks(browser, s, tmp_path)
    finally:
        stop_server(s)


def contracts_page_checks(browser, s, tmp_path):
    s.apply_yaml("apiVersion: v3.0.2\nkind: DataContract\nid: orders\nversion: 1.0.0\n"
                 "status: active\nschema:\n  - name: orders\n    properties:\n"
                 "      - {name: id, logicalType: integer, unique: true}\n")
    (tmp_path / "good.csv").write_text("id\n1\n2\n")
    (tmp_path / "bad.csv").write_text("id\n1\n1\n")
    for name in ["good.csv", "bad.csv"]:
        status, body = s.request("POST", "/api/v1/datacontracts/orders/versions",
                                 {"path": str(tmp_path / name)})
        assert status == 201, body
    sign_in_ok(browser, s, s.token)
    nav(browser, "nav-contracts", "Data contracts")
    latest = browser.find_element(By.CSS_SELECTOR, "#contract-orders [data-status]")
    assert latest.get_attribute("data-status") == "failed"
    assert [r.get_attribute("data-name") for r in rows(browser, "versions-table")] == ["orders-v2", "orders-v1"]


def month_slice(tmp_path, month):
    """The rows of the real nycflights13 weather file for one month, written under tmp_path."""
    source = ROOT.parent / "shared" / "data" / "nycflights13" / "weather.csv"
    lines = source.read_text().splitlines()
    keep = [lines[0]] + [line for line in lines[1:] if line.split(",")[2] == str(month)]
    path = tmp_path / f"weather-2013-{month:02d}.csv"
    path.write_text("\n".join(keep) + "\n")
    return path


def test_contract_page_shows_seasonal_drift(browser, tmp_path):
    s = start_server()
    try:
        s.apply_yaml((ROOT / "examples" / "contracts" / "weather-monthly.odcs.yaml").read_text())
        for month in [1, 7]:
            status, body = s.request("POST", "/api/v1/datacontracts/weather-monthly/versions",
                                     {"path": str(month_slice(tmp_path, month))})
            assert status == 201, body
        sign_in_ok(browser, s, s.token)
        nav(browser, "nav-contracts", "Data contracts")
        browser.find_element(By.CSS_SELECTOR, "#contract-weather-monthly a").click()
        wait_h1(browser, "weather-monthly")
        assert path_of(browser) == "/console/contracts/weather-monthly"
        verdict = browser.find_element(By.ID, "drift-verdict")
        assert verdict.get_attribute("data-verdict") == "drift"
        assert "temp" in verdict.text and "dewp" in verdict.text
        # One bar per column, drifted ones highlighted, each with its threshold line.
        drifted = browser.find_elements(By.CSS_SELECTOR, "svg#drift-chart rect.bar-drift")
        calm = browser.find_elements(By.CSS_SELECTOR, "svg#drift-chart rect.bar-nodrift")
        marks = browser.find_elements(By.CSS_SELECTOR, "svg#drift-chart rect.chart-threshold")
        assert len(drifted) >= 2
        assert len(drifted) + len(calm) == len(marks) >= 10
        labels = svg_texts(browser, "drift-chart")
        assert "temp" in labels and "dewp" in labels
        assert all(float(r.get_attribute("width")) > 0 for r in drifted)
        # The check results chart has a row per version.
        assert any(t.startswith("v1 (") for t in svg_texts(browser, "checks-chart"))
        assert [r.get_attribute("data-version") for r in rows(browser, "contract-versions-table")] == ["2", "1"]
        # The overlay follows the selected column.
        browser.find_element(By.CSS_SELECTOR, "#drift-columns a[data-column='origin']").click()
        wait_for(browser, lambda d: has(d, "#overlay-panel[data-column='origin']"))
        assert has(browser, "svg#overlay-chart rect.bar-reference")
        assert has(browser, "svg#overlay-chart rect.bar-current")
        assert "EWR" in svg_texts(browser, "overlay-chart")
    finally:
        stop_server(s)


def test_object_text_is_escaped(browser, fresh_server):
    fresh_server.apply_yaml(
        """
apiVersion: plinth/v1
kind: Team
metadata: {name: tricky}
spec: {displayName: "<b id=injected>bold</b>", description: "<script>document.title='pwned'</script>"}
"""
    )
    sign_in_ok(browser, fresh_server, fresh_server.token)
    nav(browser, "nav-teams", "Teams")
    row = browser.find_element(By.ID, "team-tricky")
    assert "<b id=injected>bold</b>" in row.text
    assert "<script>" in row.text
    assert not has(browser, "#injected")
    assert browser.title != "pwned"


def test_unknown_console_page_is_an_html_error(browser, demo_server):
    sign_in_ok(browser, demo_server, demo_server.token)
    browser.get(demo_server.url + "/console/no-such-page")
    wait_h1(browser, "Page not found")
    assert "/console/no-such-page" in browser.find_element(By.ID, "error-message").text
