"""A real browser for the tests: headless Chromium driven by Selenium 4 and Debian's
chromedriver, the network blocked for real, every request recorded.

The network is blocked for real: all traffic goes to a closed proxy port
(``--proxy-server=127.0.0.1:9``) and every host name resolves to nothing
(``--host-resolver-rules=MAP * ~NOTFOUND``), so a page that tried to load a CDN script
or a tile would fail, not quietly succeed. Every request the page makes is recorded from
Chromium's performance log (the DevTools ``Network.requestWillBeSent`` events), so a test
can assert that none left ``file:``, ``data:`` or ``blob:`` (:meth:`SiteBrowser.non_local`);
``tests/site/test_site_browser.py`` has the positive control that the recording sees a
network request when a page makes one.

Skipped where Chromium or chromedriver or selenium is missing (``apt-get install chromium
chromium-driver``; ``pip install selenium``), failed when ``CI`` is set: ``.ci/run``
installs them, so a skip there is a broken CI (:func:`common.skip_or_fail`).
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import skip_or_fail

#: The only URL schemes a self-contained site may request.
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")

#: Flags as the machine notes prescribe for headless Chromium as root without a network,
#: plus the closed proxy and the resolver that resolves nothing.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--disable-dev-shm-usage",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


def find_chromium() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing."""
    browser = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def require_browser() -> tuple[str, str]:
    """The paths, or skip the module (fail under CI) with the reason."""
    found = find_chromium()
    if found is None:
        skip_or_fail(
            "headless Chromium and chromedriver are not installed "
            "(apt-get install chromium chromium-driver)",
            module=True,
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        skip_or_fail("selenium is not installed (pip install 'dpmap[test]')", module=True)
    return found


class SiteBrowser:
    """One headless Chromium (one tab) with the network blocked and requests recorded."""

    def __init__(
        self, profile: Path, downloads: Path, *, width: int = 1200, height: int = 900
    ) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        chromium, chromedriver = require_browser()
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={width},{height}")
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        options.add_experimental_option(
            "prefs",
            {"download.default_directory": str(downloads), "download.prompt_for_download": False},
        )
        self.downloads = downloads
        self.width, self.height = width, height
        self.driver = webdriver.Chrome(service=Service(chromedriver), options=options)
        self.driver.set_script_timeout(60)
        self.events: list[dict[str, Any]] = []
        self.cdp("Network.enable")
        self.cdp(
            "Browser.setDownloadBehavior",
            behavior="allow",
            downloadPath=str(downloads),
            eventsEnabled=True,
        )
        self.viewport(width, height)

    # -- DevTools --
    def cdp(self, method: str, **params: Any) -> dict[str, Any]:
        return self.driver.execute_cdp_cmd(method, params)  # type: ignore[no-any-return]

    def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )
        self.width, self.height = width, height

    def _drain(self) -> None:
        for entry in self.driver.get_log("performance"):
            self.events.append(json.loads(entry["message"])["message"])

    def requested_urls(self) -> list[str]:
        """Every URL the browser was asked to fetch since the last :meth:`load`."""
        self._drain()
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e["method"] == "Network.requestWillBeSent"
        ]

    def non_local(self) -> list[str]:
        """Requests whose scheme is not file:, data:, blob: (or about:blank)."""
        return [u for u in self.requested_urls() if not u.startswith(LOCAL_SCHEMES)]

    def errors(self) -> list[str]:
        """JavaScript errors and console errors since the last :meth:`load`."""
        return [
            e["message"]
            for e in self.driver.get_log("browser")
            if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]
        ]

    def forget(self) -> None:
        """Start a new recording: drop the requests and console messages seen so far."""
        self._drain()
        self.events.clear()
        self.driver.get_log("browser")

    # -- pages --
    def load(self, url: str, *, ready: str | None = "window.dpmapSite.ready") -> None:
        """Open ``url``; wait until the ``ready`` promise resolves (when given)."""
        self.forget()
        self.driver.get(url)
        if ready is not None:
            self.wait_for(f"!!({ready})", 30)
            outcome = self.run_async(
                f"Promise.resolve({ready}).then(() => done(true), e => done(String(e)));"
            )
            if outcome is not True:
                raise RuntimeError(f"{ready} rejected: {outcome}")
        self.frames()

    def frames(self, n: int = 2) -> None:
        """Wait ``n`` animation frames (a canvas draws on the next frame)."""
        self.run_async(
            "let k = " + str(n) + "; const f = () => (--k ? requestAnimationFrame(f) : done(1));"
            " requestAnimationFrame(f);"
        )

    def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(f"return ({expression});")
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still false after {timeout} s")
            time.sleep(0.05)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def run_async(self, body: str, *args: Any) -> Any:
        """Run ``body`` with ``done`` bound to the callback; return what it passes."""
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];" + body, *args
        )

    def screenshot(self, path: Path | None = None) -> np.ndarray:
        """The viewport as an RGB float array in [0, 1] (also written to ``path``)."""
        from PIL import Image

        png = base64.b64decode(self.cdp("Page.captureScreenshot", format="png")["data"])
        if path is not None:
            path.write_bytes(png)
        image = Image.open(io.BytesIO(png)).convert("RGB")
        return np.asarray(image, dtype=float) / 255.0

    def click_at(self, x: float, y: float) -> None:
        """A real mouse click at viewport coordinates (W3C pointer actions)."""
        from selenium.webdriver.common.actions.action_builder import ActionBuilder

        actions = ActionBuilder(self.driver)
        actions.pointer_action.move_to_location(round(x), round(y)).click()
        actions.perform()

    def wait_download(self, name: str, timeout: float = 10.0) -> Path:
        path = self.downloads / name
        deadline = time.monotonic() + timeout
        while not path.exists() or any(self.downloads.glob("*.crdownload")):
            if time.monotonic() > deadline:
                have = sorted(p.name for p in self.downloads.iterdir())
                raise TimeoutError(f"no download {name!r} within {timeout} s (have {have})")
            time.sleep(0.05)
        return path

    def close(self) -> None:
        self.driver.quit()


def hex_rgb(colour: str) -> np.ndarray:
    """'#rrggbb' as floats in [0, 1]."""
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=float) / 255.0


def pixels_near(image: np.ndarray, colours: list[str], tol: float = 3 / 255) -> int:
    """How many pixels are within ``tol`` (per channel) of one of ``colours``."""
    hit = np.zeros(image.shape[:2], dtype=bool)
    for colour in colours:
        hit |= np.all(np.abs(image - hex_rgb(colour)) <= tol, axis=-1)
    return int(hit.sum())
