"""The latent explorer (/ui) in a real headless Chromium (Debian's chromium + chromium-driver,
driven by Selenium), against the real server, on the digits model and on an MNIST model.

What the page draws is compared pixel for pixel with what the endpoints return for the same
request; the browser console must stay free of errors. Screenshots go to results/ui/.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import MNIST_DIR, ROOT, Server

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "results" / "ui"
pytestmark = pytest.mark.skipif(not Path(CHROMEDRIVER).exists(),
                                reason="chromium-driver is not installed (make system-deps)")


def _mnist_repo(tmp: Path) -> Path:
    """A small conv VAE on the MNIST digits (1 epoch: the page's plumbing, not its quality)."""
    from export.onnx_export import export_checkpoint
    from training.train import TrainConfig, train

    cfg = TrainConfig(data="mnist", data_path=str(MNIST_DIR), arch="conv", hidden="64",
                      latent_dim=6, epochs=1, batch_size=128, iwae_k=2, out=str(tmp / "c.pt"),
                      quiet=True, threads=2, feature_epochs=1)
    train(cfg)
    export_checkpoint(cfg.out, tmp / "repository", "mnist", variants=())
    return tmp / "repository"


def _byo_repo(tmp: Path, trained: dict) -> Path:
    """A user's own VAE (tests/byo_classic.py, on 28x28 digits) exported with export_vae,
    served beside the digits model: the page is the same, and its model picker switches."""
    from two_models import export_classic28

    shutil.copytree(trained["repository"] / "digits", tmp / "repository" / "digits")
    export_classic28(tmp / "repository")
    return tmp / "repository"


@pytest.fixture(scope="module", params=["digits", "mnist", "byo"])
def served(request, trained, tmp_path_factory):
    env = {}
    if request.param == "byo":  # two models; the user's own is the default
        repo, name = _byo_repo(tmp_path_factory.mktemp("ui-byo"), trained), "classic28"
        env = {"VAE_MODELS": "classic28,digits"}
    elif request.param == "mnist":
        if not MNIST_DIR.is_dir():
            pytest.skip(f"{MNIST_DIR} is absent")
        # VAE_UI_REPOSITORY=models: the real MNIST model (`make model-mnist`), for README's
        # screenshot; by default a 1-epoch model trained here
        repo = Path(os.environ.get("VAE_UI_REPOSITORY") or
                    _mnist_repo(tmp_path_factory.mktemp("ui-mnist")))
        name = "mnist"
    else:
        repo, name = trained["repository"], "digits"
    with Server(repo, {"VAE_MODEL_NAME": name, **env}) as srv:
        srv.name = request.param  # screenshots: results/ui/<param>-*.png
        yield srv


@pytest.fixture(scope="module")
def browser(served, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-sync",
                 "--disable-component-update", "--window-size=1400,1800",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.get(served.url + "/ui/")
    wait_for(driver, "document.body.dataset.loaded === '1'", timeout=60)
    yield driver
    try:
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"browser console errors: {errors}"
    finally:
        driver.quit()


def wait_for(driver, condition: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script(f"return Boolean({condition});"):
            return
        time.sleep(0.05)
    status = driver.execute_script("return document.getElementById('status').textContent;")
    raise TimeoutError(f"page never reached: {condition} (status: {status!r})")


def canvas_pixels(driver, selector: str) -> list[np.ndarray]:
    """The red channel of each matching canvas, [H, W] uint8 (grey images: R = G = B)."""
    shots = driver.execute_script("""
        return [...document.querySelectorAll(arguments[0])].map((cv) => {
          const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
          return {w: cv.width, h: cv.height, r: Array.from(d.filter((_, i) => i % 4 === 0))};
        });""", selector)
    return [np.array(s["r"], np.uint8).reshape(s["h"], s["w"]) for s in shots]


def as_pixels(images) -> np.ndarray:
    """What the page draws for decoder means [..., 1, H, W]: JS Math.round(255 * v)."""
    return np.floor(255 * np.clip(np.asarray(images, np.float64), 0, 1) + 0.5).astype(np.uint8)


def set_value(driver, element_id: str, value) -> None:
    el = driver.find_element("id", element_id)
    el.clear()
    el.send_keys(str(value))


def post(srv, path: str, body: dict) -> dict:
    r = httpx.post(srv.url + path, json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_sample_grid_equals_what_sample_returns(browser, served):
    set_value(browser, "sample-n", 9)
    set_value(browser, "sample-seed", 7)
    browser.execute_script("const t = document.getElementById('sample-temp'); t.value = '0.8';"
                           "t.dispatchEvent(new Event('input'));")
    browser.find_element("id", "sample-go").click()
    wait_for(browser, "document.getElementById('sample-grid').dataset.seed === '7' && "
             "document.querySelectorAll('#sample-grid canvas').length === 9")
    want = post(served, "/sample", {"n": 9, "seed": 7, "temperature": 0.8})["outputs"]
    drawn = canvas_pixels(browser, "#sample-grid canvas")
    assert len(drawn) == 9
    for got, img in zip(drawn, as_pixels(want), strict=True):
        np.testing.assert_array_equal(got, img[0])
    browser.save_screenshot(str(_shot(served, "samples")))


def test_sampling_a_class_and_more_like_this(browser, served):
    """The samples panel draws from the data too: one class of the reference set, and the
    encoded image's neighbourhood (the encode panel's "More like this")."""
    from selenium.webdriver.support.ui import Select

    labels = post(served, "/latent_map", {})["labels"]
    if labels is None:
        pytest.skip("this model's reference set has no labels")
    wait_for(browser, "document.getElementById('sample-prior').options.length > 2")
    label = sorted(set(labels))[1]
    set_value(browser, "sample-n", 6)
    set_value(browser, "sample-seed", 4)
    browser.execute_script("const t = document.getElementById('sample-temp'); t.value = '1';"
                           "t.dispatchEvent(new Event('input'));")
    Select(browser.find_element("id", "sample-prior")).select_by_value(f"label:{label}")
    browser.find_element("id", "sample-go").click()
    wait_for(browser, f"document.getElementById('sample-grid').dataset.prior === 'label:{label}'"
             " && document.querySelectorAll('#sample-grid canvas').length === 6")
    want = post(served, "/sample", {"n": 6, "seed": 4, "prior": "aggregate",
                                    "labels": [label]})["outputs"]
    for got, img in zip(canvas_pixels(browser, "#sample-grid canvas"), as_pixels(want),
                        strict=True):
        np.testing.assert_array_equal(got, img[0])
    browser.find_element("id", "encode-like").click()
    wait_for(browser, "document.getElementById('sample-grid').dataset.prior === 'like'")
    browser.save_screenshot(str(_shot(served, "samples_like")))


def test_every_panel_is_filled_on_first_load(browser, served):
    """No black squares: before any click, each panel shows what its endpoint answers for the
    page's defaults (sample seed 0, interpolation between prior samples 1 and 2, the map's
    first reference point decoded, prior sample 3 encoded and reconstructed)."""
    model = post(served, "/model", {})
    assert len(canvas_pixels(browser, "#sample-grid canvas")) > 0
    z = [post(served, "/sample", {"n": 1, "seed": s})["z"][0] for s in (1, 2)]
    path = as_pixels(post(served, "/interpolate", {"start_z": [z[0]], "end_z": [z[1]],
                                                   "steps": 9, "method": "lerp"})["outputs"])[0]
    np.testing.assert_array_equal(canvas_pixels(browser, "#interp-view")[0], path[0][0])
    assert len(canvas_pixels(browser, "#interp-strip canvas")) == 9
    x3 = post(served, "/sample", {"n": 1, "seed": 3})["outputs"]
    np.testing.assert_array_equal(canvas_pixels(browser, "#encode-input")[0],
                                  as_pixels(x3)[0][0])
    recon = post(served, "/reconstruct", {"inputs": x3})["outputs"]
    np.testing.assert_array_equal(canvas_pixels(browser, "#encode-recon")[0],
                                  as_pixels(recon)[0][0])
    assert len(browser.find_elements("css selector", "#encode-values tbody tr")) == \
        model["latent_dim"]
    z_map = browser.execute_script("return JSON.parse(document.getElementById('map-decoded')"
                                   ".dataset.z);")
    want = as_pixels(post(served, "/decode", {"z": [z_map]})["outputs"])[0][0]
    np.testing.assert_array_equal(canvas_pixels(browser, "#map-decoded")[0], want)
    for sel in ("#compare-a", "#compare-b", "#interp-view", "#encode-recon", "#map-decoded"):
        assert canvas_pixels(browser, sel)[0].any(), f"{sel} is black"
    browser.save_screenshot(str(_shot(served, "first-load")))


def test_interpolation_slider_shows_each_step(browser, served):
    from selenium.webdriver.common.keys import Keys

    set_value(browser, "interp-steps", 9)
    browser.execute_script("document.getElementById('interp-strip').replaceChildren();")
    browser.find_element("css selector", "input[name='interp-method'][value='slerp']").click()
    browser.find_element("id", "interp-go").click()
    wait_for(browser, "document.querySelectorAll('#interp-strip canvas').length === 9 && "
             "!document.getElementById('alpha').disabled")
    z = [post(served, "/sample", {"n": 1, "seed": s})["z"][0] for s in (1, 2)]  # A, B seeds
    want = as_pixels(post(served, "/interpolate", {"start_z": [z[0]], "end_z": [z[1]],
                                                   "steps": 9, "method": "slerp"})["outputs"])[0]
    np.testing.assert_array_equal(canvas_pixels(browser, "#interp-view")[0], want[0][0])
    slider = browser.find_element("id", "alpha")
    for _ in range(3):
        slider.send_keys(Keys.ARROW_RIGHT)  # a real key press on the range input
    wait_for(browser, "document.getElementById('interp-view').dataset.step === '3'")
    shown = canvas_pixels(browser, "#interp-view")[0]
    np.testing.assert_array_equal(shown, want[3][0])
    assert not np.array_equal(shown, want[0][0])
    assert "α = 0.375" in browser.find_element("id", "alpha-out").text
    browser.save_screenshot(str(_shot(served, "interpolation")))


def test_uploaded_image_shows_mu_and_sigma(browser, served, tmp_path):
    model = post(served, "/model", {})
    _, h, w = model["input"]["shape"]
    held = post(served, "/sample", {"n": 1, "seed": 11})["outputs"][0][0]  # any plausible digit
    pixels = as_pixels(held)
    png = tmp_path / "digit.png"  # 8x larger, nearest: the page's area average recovers it
    Image.fromarray(pixels).resize((w * 8, h * 8), Image.NEAREST).save(png)
    browser.find_element("css selector", "#encode-source input.file").send_keys(str(png))
    wait_for(browser, "document.querySelector('#encode-source img.preview').complete && "
             "document.querySelector('#encode-source input[value=upload]').checked")
    browser.execute_script("document.querySelector('#encode-values tbody').replaceChildren();"
                           "document.getElementById('encode-neighbours').replaceChildren();")
    browser.find_element("id", "encode-go").click()
    wait_for(browser, f"document.querySelectorAll('#encode-values tbody tr').length === "
             f"{model['latent_dim']}")
    rows = [[td.text for td in tr.find_elements("tag name", "td")]
            for tr in browser.find_elements("css selector", "#encode-values tbody tr")]
    want = post(served, "/encode", {"inputs": [(pixels / 255.0).ravel().tolist()]})
    np.testing.assert_allclose([float(r[1]) for r in rows], want["mu"][0], atol=2e-4)
    np.testing.assert_allclose([float(r[2]) for r in rows], want["sigma"][0], atol=2e-4)
    bars = browser.find_elements("css selector", "#encode-bars rect.bar")
    whiskers = browser.find_elements("css selector", "#encode-bars line.whisker")
    assert len(bars) == len(whiskers) == model["latent_dim"]
    np.testing.assert_array_equal(canvas_pixels(browser, "#encode-input")[0], pixels)
    # its nearest reference items (W2, the default measure), as /neighbors answers them
    wait_for(browser, "document.querySelectorAll('#encode-neighbours figure').length === 5")
    near = post(served, "/neighbors", {"inputs": [(pixels / 255.0).ravel().tolist()]})
    figs = browser.find_elements("css selector", "#encode-neighbours figure")
    assert [int(f.get_attribute("data-index")) for f in figs] == near["indices"][0]
    for fig, label, score in zip(figs, near["labels"][0], near["scores"][0], strict=True):
        caption = fig.find_element("tag name", "figcaption").text
        assert f"label {label}" in caption
        assert abs(float(caption.split("W2 ")[1]) - score) <= 5e-4, caption  # 3 decimals
    for got, img in zip(canvas_pixels(browser, "#encode-neighbours canvas"),
                        as_pixels(near["outputs"][0]), strict=True):
        np.testing.assert_array_equal(got, img[0])
    browser.save_screenshot(str(_shot(served, "encode")))


def test_drawn_digit_interpolates_and_encodes(browser, served):
    from selenium.webdriver.common.action_chains import ActionChains

    pad = browser.find_element("css selector", "#end-a canvas.pad")
    ActionChains(browser).move_to_element_with_offset(pad, -30, -50).click_and_hold() \
        .move_by_offset(20, 40).move_by_offset(20, 40).move_by_offset(0, 20).release().perform()
    assert browser.execute_script(
        "return document.querySelector('#end-a input[value=draw]').checked;")
    browser.find_element("id", "interp-go").click()
    wait_for(browser, "document.getElementById('status').textContent === 'interpolating: done'")
    assert len(canvas_pixels(browser, "#interp-strip canvas")) == 9


def test_clicking_the_map_decodes_that_point(browser, served):
    from selenium.webdriver.common.action_chains import ActionChains

    the_map = browser.find_element("id", "map")
    browser.execute_script("delete document.getElementById('map-decoded').dataset.z;")
    ActionChains(browser).move_to_element_with_offset(the_map, 40, -60).click().perform()
    wait_for(browser, "document.getElementById('map-decoded').dataset.z !== undefined")
    z = browser.execute_script("return JSON.parse(document.getElementById('map-decoded')"
                               ".dataset.z);")
    latent = post(served, "/latent_map", {})
    assert len(z) == len(latent["projection_mean"])
    want = as_pixels(post(served, "/decode", {"z": [z]})["outputs"])[0][0]
    np.testing.assert_array_equal(canvas_pixels(browser, "#map-decoded")[0], want)
    assert "decoded (" in browser.find_element("id", "map-click").text
    path = _shot(served, "explorer")
    browser.save_screenshot(str(path))
    assert Image.open(io.BytesIO(base64.b64decode(browser.get_screenshot_as_base64()))).size[0]


def test_compare_view_shows_both_posteriors_and_the_measures(browser, served):
    """On load the page compares prior samples 4 and 5 (decoded); then A = B gives overlap 1."""
    wait_for(browser, "document.getElementById('compare-measures').dataset.done === '1'")
    x = [post(served, "/decode", {"z": post(served, "/sample", {"n": 1, "seed": s})["z"]})
         ["outputs"][0] for s in (4, 5)]
    want = post(served, "/compare", {"a": [x[0]], "b": [x[1]]})
    shown = [float(td.text) for td in browser.find_elements(
        "css selector", "#compare-measures tbody td:last-child")]
    np.testing.assert_allclose(shown, [want[k][0] for k in ("overlap", "bhattacharyya", "kl_ab",
                                                             "kl_ba", "w2")], rtol=1e-3)
    z = post(served, "/model", {})["latent_dim"]
    for name in ("a", "b"):
        assert len(browser.find_elements("css selector", f"#compare-bars rect.band-{name}")) == z
    for got, img in zip(canvas_pixels(browser, "#compare-a, #compare-b"), as_pixels(x),
                        strict=True):
        np.testing.assert_array_equal(got, img[0])
    browser.save_screenshot(str(_shot(served, "compare")))
    seed_b = browser.find_element("css selector", "#cmp-b input.seed")
    seed_b.clear()
    seed_b.send_keys("4")
    browser.execute_script("document.getElementById('compare-measures').dataset.done = '';")
    browser.find_element("id", "compare-go").click()
    wait_for(browser, "document.getElementById('compare-measures').dataset.done === '1'")
    shown = [float(td.text) for td in browser.find_elements(
        "css selector", "#compare-measures tbody td:last-child")]
    np.testing.assert_allclose(shown, [1, 0, 0, 0, 0], atol=1e-3)  # identical posteriors


def test_tsne_map_and_a_click_decodes_the_nearest_points_mean(browser, served):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "map-projection")).select_by_value("tsne")
    wait_for(browser, "document.getElementById('map-proj').textContent === 'tsne'")
    ref = post(served, "/latent_map", {"projection": "tsne", "with_mu": True})
    assert "silhouette by label" in browser.find_element("id", "map-quality").text
    ActionChains(browser).move_to_element_with_offset(browser.find_element("id", "map"), -50, 30) \
        .click().perform()
    wait_for(browser, "document.getElementById('map-decoded').dataset.near !== undefined")
    xy = np.array(browser.execute_script("return map.clicked;"))  # set before dataset.near
    z = np.array(browser.execute_script("return JSON.parse(document.getElementById("
                                        "'map-decoded').dataset.z);"))
    # the documented kernel, computed here: 10 nearest in the plane, exp(-d^2 / 2h^2)
    d = np.linalg.norm(np.array(ref["points"]) - xy, axis=1)
    near = np.argsort(d, kind="stable")[:10]
    w = np.exp(-d[near] ** 2 / (2 * d[near].max() ** 2))
    np.testing.assert_allclose(z, w @ np.array(ref["mu"])[near] / w.sum(), atol=1e-6)
    want = as_pixels(post(served, "/decode", {"z": [z.tolist()]})["outputs"])[0][0]
    np.testing.assert_array_equal(canvas_pixels(browser, "#map-decoded")[0], want)
    browser.save_screenshot(str(_shot(served, "tsne")))
    Select(browser.find_element("id", "map-projection")).select_by_value("pca")
    wait_for(browser, "document.getElementById('map-proj').textContent === 'pca'")


def _shot(served, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS / f"{served.name}-{name}.png"


def test_page_is_self_contained_under_a_strict_csp(served):
    r = httpx.get(served.url + "/ui", follow_redirects=True)
    assert r.status_code == 200 and "<canvas" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    for name in ("api.js", "explorer.js", "explorer.css"):  # no CDN: every asset is ours
        assert httpx.get(f"{served.url}/ui/{name}").status_code == 200, name
    assert "http" not in r.text.replace("http-equiv", "")  # no absolute URL to elsewhere


def test_every_page_loads_only_from_its_own_origin(browser, served):
    """The landing page, Swagger UI and the explorer, each in Chromium: every resource the
    browser fetched came from the service itself, nothing was blocked by the CSP (which would
    show as a console error), and each page rendered."""
    if served.name != "digits":
        pytest.skip("the pages are the same for every model")
    checks = {"/": "document.querySelector('a[href=\"ui/\"]') !== null",
              "/docs": "document.querySelector('.swagger-ui .info') !== null",
              "/ui/": "document.body.dataset.ready === '1'"}
    for path, rendered in checks.items():
        r = httpx.get(served.url + path)
        assert "default-src 'self'" in r.headers["content-security-policy"], path
        browser.get(served.url + path)
        wait_for(browser, rendered)
        fetched = browser.execute_script(
            "return performance.getEntriesByType('resource').map((e) => e.name);")
        assert all(u.startswith(served.url + "/") for u in fetched), (path, fetched)
        assert fetched or path == "/", path  # the landing page itself needs nothing more
        logs = browser.get_log("browser")
        assert not [e for e in logs if e["level"] == "SEVERE"], (path, logs)
        if path == "/docs":  # the API's title shows (BentoML's stylesheet hid it)
            wait_for(browser, "document.querySelector('.swagger-ui .info .title') !== null")
            title = browser.execute_script(
                "const t = document.querySelector('.swagger-ui .info .title');"
                "return [getComputedStyle(t).visibility, t.textContent];")
            assert title[0] == "visible" and title[1].startswith("VAE serving"), title
    assert "digits" in httpx.get(served.url + "/").text


def test_the_model_picker_switches_every_panel(browser, served):
    """With two models, picking the other one rebuilds the page for it: its name and shapes,
    and every panel filled from its endpoints."""
    from selenium.webdriver.support.ui import Select

    names = [m["name"] for m in post(served, "/model", {})["models"]]
    picker = Select(browser.find_element("id", "model"))
    assert [o.text for o in picker.options] == names
    if len(names) < 2:
        return
    other = next(n for n in names if n != post(served, "/model", {})["name"])
    picker.select_by_value(other)
    wait_for(browser, f"window.location.search === '?model={other}' && "
             "document.body.dataset.loaded === '1'", timeout=60)
    info = post(served, "/model", {"model": other})
    assert browser.find_element("id", "model-info").text.startswith(f"{other} v")
    assert browser.execute_script("return document.body.dataset.shape;") == \
        str(info["input"]["shape"]).replace(" ", "")
    want = post(served, "/sample", {"n": 16, "seed": 0, "model": other})["outputs"]
    drawn = canvas_pixels(browser, "#sample-grid canvas")
    for got, img in zip(drawn, as_pixels(want), strict=True):
        np.testing.assert_array_equal(got, img[0])
    x3 = post(served, "/sample", {"n": 1, "seed": 3, "model": other})["outputs"]
    recon = post(served, "/reconstruct", {"inputs": x3, "model": other})["outputs"]
    np.testing.assert_array_equal(canvas_pixels(browser, "#encode-recon")[0],
                                  as_pixels(recon)[0][0])
    browser.save_screenshot(str(_shot(served, f"model-{other}")))
