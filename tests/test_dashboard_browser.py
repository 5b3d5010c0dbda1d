"""The dashboard in a real browser: headless Chromium (selenium) opens every page of a store built by real
short runs, checks what each page shows (charts drawn on their canvases included), fails on any JavaScript
error in the console, and leaves a screenshot of each page in test-artifacts/dashboard/."""

import base64
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from rewardlab.config import CompareConfig, EvalConfig, SFTConfig, TrainConfig
from rewardlab.eval.compare import run_compare
from rewardlab.eval.evaluate import evaluate
from rewardlab.runs import RunStore
from rewardlab.train.sft import run_sft
from rewardlab.train.trainer import train

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])"
)
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="headless Chromium and chromedriver are not installed (make install, or apt-get install "
        "chromium chromium-driver)",
    ),
    pytest.mark.slow,
]


def token_statistics(store: RunStore, run_id: str) -> int:
    """Teacher-force the rollouts of the run's last step through the run's own model (the entropy probe's
    scoring) and store each model turn's tokens with their log-probs and entropies, as a rollout stored with
    them has; the page colours those tokens. Returns that step."""
    from rewardlab.models import load_model
    from rewardlab.probes.entropy import score, stored

    replied = [row for row in store.rollouts(run_id)
               if any(m["role"] == "assistant" and m["content"] for m in row["completion"])]  # fmt: skip
    last = [row for row in replied if row["step"] == replied[-1]["step"]]
    model, tokenizer = load_model(str(store.get(run_id).dir))
    completions = stored(tokenizer, run_id, len(last), store.root)  # the same rollouts, in the same order
    with store._transaction() as conn:
        for row, completion in zip(last, completions, strict=True):
            [trace] = score(model, tokenizer, [completion], 1.0, "tokens")  # one model turn each
            tokens = [[{"text": t.piece, "logprob": t.logprob, "entropy": t.entropy} for t in trace.tokens]]
            statistics = json.dumps({"tokens": tokens})
            conn.execute("UPDATE rollouts SET metrics = ? WHERE id = ?", (statistics, row["id"]))
    return last[0]["step"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """sft -> train (an alert fires) -> eval of each, a multi-turn eval (wordle) and a compare run of two
    players on an id-set environment: what every page needs, in a few seconds."""
    root = tmp_path_factory.mktemp("dashboard") / "runs"
    store = RunStore(root)
    env = {"name": "arithmetic", "args": {"level": 1, "num_train": 20, "num_eval": 4}}
    sampling = {"max_new_tokens": 6}
    common = {"env": env, "runs_dir": str(root)}
    sft = run_sft(
        SFTConfig.model_validate({**common, "max_steps": 6, "batch_size": 4, "log_every": 1}), store
    )
    trained = train(
        TrainConfig.model_validate(
            {**common, "model": {"name_or_path": str(sft.model_dir)}, "max_steps": 4, "prompts_per_step": 2,
             "group_size": 2, "sampling": sampling, "health": {"entropy_min": 100.0}}
        ),
        store,
    )  # fmt: skip
    evals = [
        evaluate(EvalConfig.model_validate({**common, "model": {"name_or_path": model}, "sampling": sampling,
                                            "rollouts_per_example": 2}), store).run_id
        for model in (str(sft.model_dir), str(trained.run_dir))
    ]  # fmt: skip
    player = {"model": {"name_or_path": "scripted:random"}, "rollouts_per_example": 1, "runs_dir": str(root)}
    wordle = evaluate(
        EvalConfig.model_validate({**player, "env": {"name": "wordle"}, "num_examples": 2}), store
    ).run_id
    ids = {"name": "event_selection", "args": {"level": 1, "num_train": 8, "num_eval": 4}}
    compared = run_compare(
        store,
        CompareConfig.model_validate({"a": "scripted:random", "b": "scripted:oracle", "env": ids,
                                      "data": "held-out", "num_examples": 4, "rollouts_per_example": 1,
                                      "runs_dir": str(root)}),
    ).run_id  # fmt: skip
    step = token_statistics(store, trained.run_id)
    return {"root": root, "sft": sft.run_id, "train": trained.run_id, "evals": evals, "wordle": wordle,
            "compare": compared, "token_step": step}  # fmt: skip


@pytest.fixture(scope="module")
def dashboard(runs):
    import uvicorn

    from rewardlab.dashboard.app import bind, create_app

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(runs["root"]), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


class Page:
    """One page opened in the browser: wait for what it must show, then a screenshot and the console check."""

    def __init__(self, driver, url):
        self.driver = driver
        self.driver.get(url)

    def wait(self, css, count=1, timeout=15):
        from selenium.webdriver.common.by import By

        return self.until(
            lambda d: (found := d.find_elements(By.CSS_SELECTOR, css)) and len(found) >= count and found,
            timeout,
        )

    def until(self, condition, timeout=15):
        """Wait until ``condition(driver)`` holds (a page re-renders after a filter changes)."""
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        ignored = (NoSuchElementException, StaleElementReferenceException)
        return WebDriverWait(self.driver, timeout, ignored_exceptions=ignored).until(condition)

    def text(self, css):
        return "\n".join(element.text for element in self.wait(css))

    def drawn_canvases(self):
        """Chart canvases with something painted on them (a blank canvas reads back all transparent)."""
        return self.driver.execute_script(
            """return [...document.querySelectorAll('.uplot canvas')].filter((c) => {
                 const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                 for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) return true;
                 return false;
               }).length;"""
        )

    def finish(self, name):
        """A screenshot of the whole page (beyond the window), and no JavaScript error in the console."""
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1}
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        (ARTIFACTS / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))
        errors = [entry["message"] for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors


def test_every_page_shows_its_content_without_a_script_error(runs, dashboard, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    page = Page(browser, dashboard)
    table = page.text("#runs-table")
    for run_id in (runs["sft"], runs["train"], runs["compare"], *runs["evals"]):
        assert run_id in table
    train_row = page.text(f'tr[data-run="{runs["train"]}"]')
    assert "from" in train_row and "used by" in train_row and "alert" in train_row  # lineage, and the alert
    page.finish("runs")
    Select(page.wait("#filter-kind")[0]).select_by_value("eval")
    page.until(
        lambda d: (
            {
                row.get_attribute("data-run")[:5]
                for row in d.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")
            }
            == {"eval-"}
        )
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")) == 5  # 2, wordle, compare's 2
    page.finish("runs-filtered")

    page = Page(browser, f"{dashboard}#/run/{runs['train']}")
    page.wait("#charts .uplot canvas", count=7)
    assert page.drawn_canvases() >= 7
    titles = page.text("#charts h3")
    for title in ("Reward", "Policy entropy", "Clipped tokens", "Gradient norm", "Completion length",
                  "Truncated completions", "Groups without signal"):  # fmt: skip
        assert title in titles
    assert "entropy_collapse" in page.text("#alerts")
    assert "correct" in page.text('[data-panel="reward"] .u-legend')
    browser.execute_script(  # the smoothing slider redraws every chart
        "const s = document.getElementById('smoothing'); s.value = '0'; s.dispatchEvent(new Event('input'));"
    )
    time.sleep(0.3)
    assert page.drawn_canvases() >= 7
    browser.find_element(By.CSS_SELECTOR, "details.more summary").click()  # the other metrics, loaded now
    assert "time/step_seconds" in page.text("details.more h3") and page.wait(
        "details.more .uplot canvas", count=3
    )
    page.finish("train-curves")

    store = RunStore(runs["root"])  # a run that is still going: the page follows it
    live = store.create_run("train", {"model": {"name_or_path": "tiny"}}, manifest={})
    for step in (1, 2, 3):
        store.log_metrics(live.id, step, {"reward/mean": 0.1 * step, "entropy": 1.0})
    browser.execute_script("localStorage.setItem('rewardlab.poll_ms', '500')")  # 3 s by default
    page = Page(browser, f"{dashboard}#/run/{live.id}")
    page.until(lambda d: "last step 3" in d.find_element(By.CSS_SELECTOR, ".toolbar").text)
    assert browser.find_element(By.ID, "live").is_displayed()
    for step in (4, 5, 6):
        store.log_metrics(live.id, step, {"reward/mean": 0.1 * step, "entropy": 1.0})
    page.until(lambda d: "last step 6" in d.find_element(By.CSS_SELECTOR, ".toolbar").text, timeout=10)
    store.finish(live.id)
    page.until(lambda d: not d.find_element(By.ID, "live").is_displayed(), timeout=10)
    page.finish("live")

    page = Page(browser, f"{dashboard}#/overlay?runs={runs['train']},{runs['sft']}")
    page.wait("#charts .uplot canvas", count=2)
    legends = page.text("#charts .u-legend")
    assert runs["train"] in legends and runs["sft"] in legends and page.drawn_canvases() >= 2
    page.finish("overlay")

    page = Page(browser, f"{dashboard}#/run/{runs['wordle']}/rollouts")
    page.wait(".msg.environment")
    assert page.wait(".msg.model") and "page 1 of" in page.text("#page-info")
    assert "ENVIRONMENT" in page.text(".msg.environment .who").upper()
    page.finish("rollouts-multi-turn")

    page = Page(browser, f"{dashboard}#/run/{runs['train']}/rollouts?step={runs['token_step']}&per_page=5")
    coloured = page.wait(".msg.model .tok")
    backgrounds = {token.value_of_css_property("background-color") for token in coloured}
    assert len(backgrounds) > 1  # coloured by log-prob, token by token
    Select(page.wait("#colour-by")[0]).select_by_value("entropy")
    page.until(lambda d: "nats" in d.find_element(By.CSS_SELECTOR, ".scale").text)
    assert page.wait(".msg.model .tok") and f"step {runs['token_step']}" in page.text("#rollouts")
    page.finish("rollouts-tokens")

    page = Page(browser, f"{dashboard}#/run/{runs['evals'][1]}")
    stats = page.text("#eval-stats")
    assert "±" in page.text("#eval-mean") and "pass@1" in stats.lower() and "95% INTERVAL" in stats.upper()
    assert "correct" in page.text("#components") and "format" in page.text("#components")
    page.finish("eval")

    page = Page(browser, f"{dashboard}#/run/{runs['compare']}")
    page.wait('section[data-mode="held-out"] .samples')
    assert "Verdict" in page.text("#verdict")
    assert page.wait(".id.gold") and page.wait(".id.hit")  # id sets: gold, and what B shared with it
    assert "win / tie / loss" in page.text('section[data-mode="held-out"]')
    page.finish("compare")

    a, b = runs["evals"]
    page = Page(browser, f"{dashboard}#/compare?a={a}&b={b}")
    assert "95% CI" in page.text("#diff")
    page.finish("compare-pair")

    page = Page(browser, f"{dashboard}#/run/{runs['train']}/audit")
    audit = page.text("#audit-table")
    assert "correct" in audit and "primary" in audit and "format" in audit
    page.wait(".panel .uplot canvas")
    assert page.drawn_canvases() >= 1
    page.finish("audit")

    page = Page(browser, f"{dashboard}#/run/{runs['train']}/config")
    assert "loss_type" in page.text("#config") and "rubric.primary" in page.text("#summary")
    page.finish("config")
