"""A real headless Chromium driven over the DevTools protocol on a pipe (no extra packages):
open a page, wait for text, run a line of JavaScript, take a full-height screenshot."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# WCAG 2's contrast of every element the viewer page colours (each character of a block, each
# legend swatch, each coloured table cell), computed in the page from what the browser drew it with.
CONTRAST_JS = """(() => {
  const lum = c => c.match(/[\\d.]+/g).slice(0, 3).map(Number).map(v => v / 255)
    .map(v => v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4))
    .reduce((s, v, i) => s + [0.2126, 0.7152, 0.0722][i] * v, 0);
  const out = {n: 0, worst: 99, example: ''};
  for (const el of document.querySelectorAll('.text span, .legend span, td')) {
    const s = getComputedStyle(el);
    if (s.backgroundColor === 'rgba(0, 0, 0, 0)') continue;
    const a = lum(s.color), b = lum(s.backgroundColor);
    const c = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    out.n++;
    if (c < out.worst) { out.worst = c; out.example = s.color + ' on ' + s.backgroundColor; }
  }
  return out;
})()"""
# every "r = ±x" the page states: a unit said to track a feature (block headings, the feature
# table, the every-unit table); "no unit tracks this" states its largest |r| otherwise
CLAIMS_JS = "[...document.body.innerText.matchAll(/r = ([+-]?[0-9.]+)/g)].map(m => +m[1])"


def available() -> bool:
    return Path(CHROMIUM).is_file()


class Browser:
    """One Chromium process, one page. Messages are JSON terminated by NUL (fd 3 in, fd 4 out)."""

    def __init__(self, width: int = 1600, height: int = 1000):
        self.profile = tempfile.mkdtemp(prefix="rnnlab-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # the child reads fd 3 and writes fd 4: dup our ends there after fork
        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
                f"--window-size={width},{height}", "about:blank"]  # fmt: skip

        def wire() -> None:  # copies first: a pipe end may itself sit on fd 3 or 4
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(r, 3)  # dup2 makes them inheritable
            os.dup2(w, 4)

        # close_fds=False: subprocess would close fds 3 and 4 after wire() otherwise
        self.proc = subprocess.Popen(
            args, preexec_fn=wire, close_fds=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        os.close(to_chrome_r), os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable", session=True)
        self.width, self.height = width, height

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def eval(self, expression: str):
        r = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                      awaitPromise=True)  # fmt: skip
        return r.get("result", {}).get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def wait_for(self, js_condition: str, timeout: float = 120) -> None:
        """Until ``js_condition`` is true in the page (the UI renders after its fetches)."""
        deadline = time.monotonic() + timeout
        while not self.eval(f"Boolean({js_condition})"):
            if time.monotonic() > deadline:
                text = self.eval("document.body ? document.body.innerText : ''") or ""
                raise AssertionError(f"never true: {js_condition}; page text: {text[:1500]}")
            time.sleep(0.5)

    def text(self) -> str:
        return self.eval("document.body.innerText") or ""

    def screenshot(self, path: Path, full_height: bool = False) -> Path:
        params: dict = {"format": "png"}
        if full_height:
            h = int(self.eval("document.documentElement.scrollHeight"))
            clip = {"x": 0, "y": 0, "width": self.width, "height": h, "scale": 1}
            params |= {"captureBeyondViewport": True, "clip": clip}
        data = self.call("Page.captureScreenshot", session=True, **params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome), os.close(self._from_chrome)
        shutil.rmtree(self.profile, ignore_errors=True)
