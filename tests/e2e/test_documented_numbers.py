"""The README's learning numbers are what its commands print: the main job (``python -m
rnnlab.run``, 100,000 iterations) and the adder (``python -m rnnlab.run task=adder``) are run
exactly as documented, and every number the README quotes in its "Train" paragraph —
`final/smooth_loss …`, `objective val/loss_warm …`, `iters_to_100 …` — is read back from the
README and compared with the jobs' summary lines.

Training is deterministic: on the machine the numbers were measured on (``MEASURED_ON``: the
OpenBLAS kernel family and the CPU's vector extensions, which set the float rounding of every
product) they must match to their printed precision. Elsewhere rounding can move the last digit:
there ``OTHER_MACHINE`` last-digit units either way are allowed, and the test says so.

The main job's logged viewer page is also rendered in headless Chromium (the same checks as
tests/unit/analysis/test_viewer.py: contrast ≥ 4.5:1, no claim under |r| = 0.1); with
$RNNLAB_SCREENSHOTS set it keeps ``viewer_main_job.png``, the docs' picture of a trained page.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from helpers import browser
from helpers.processes import ROOT, run_cli

pytestmark = pytest.mark.slow

# What the README quotes, as the summary line prints it (rnnlab.tracking.ui.closing_summary).
NUMBER = r"([0-9]{1,3}(?:,[0-9]{3})*(?:\.[0-9]+)?)"  # 36.84, 1.6368, 4,300
QUOTED = re.compile(r"`(final/smooth_loss|objective val/loss_warm|iters_to_100) " + NUMBER + "`")
MEASURED_ON = "openblas SkylakeX, avx512f fma"  # machine(), where the README's numbers were run
OTHER_MACHINE = 2  # last-digit units a number may move by where the float rounding differs


def machine() -> str:
    """What the float rounding of training depends on here: OpenBLAS's kernel family (its
    DYNAMIC_ARCH choice) and the CPU extensions compiled kernels may use."""
    import numpy as np
    from threadpoolctl import threadpool_info

    np.ones((2, 2)) @ np.ones((2, 2))  # loads the BLAS
    blas = next((i for i in threadpool_info() if i["user_api"] == "blas"), {})
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[-1].split("\n", 1)[0].split()
    vector = " ".join(f for f in ("avx512f", "fma") if f in flags)
    return f"{blas.get('internal_api', '?')} {blas.get('architecture', '?')}, {vector}"


def quoted() -> dict[str, str]:
    """The numbers of the README's "Train" paragraph: {what the summary line calls it: text}."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    train = text.split("**Train.**", 1)[1].split("\n\n", 1)[0]
    return dict(QUOTED.findall(train))


def printed(stderr: str, key: str) -> str:
    """``key``'s number on the summary line (``rnnlab: …: FINISHED in …``) of a job."""
    (line,) = [ln for ln in stderr.splitlines() if ln.startswith("rnnlab: ") and "FINISHED" in ln]
    found = re.search(re.escape(key) + " " + NUMBER, line)
    assert found, (key, line)
    return found.group(1)


def agrees(got: str, documented: str, exact: bool) -> bool:
    """Equal as printed; elsewhere within OTHER_MACHINE units of the documented last digit."""
    if exact:
        return got == documented
    decimals = len(documented.split(".")[1]) if "." in documented else 0
    unit = 10.0**-decimals
    return abs(float(got.replace(",", "")) - float(documented.replace(",", ""))) <= (
        OTHER_MACHINE * unit + 1e-12
    )


def test_the_readme_numbers_are_what_its_documented_commands_print(tmp_path, kafka_path):
    documented = quoted()
    assert set(documented) == {"final/smooth_loss", "objective val/loss_warm", "iters_to_100"}
    (tmp_path / "data").mkdir()
    shutil.copy(kafka_path, tmp_path / "data" / "kafka.txt")
    here = machine()
    exact = here == MEASURED_ON
    main = run_cli([], tmp_path, timeout=3600)  # python -m rnnlab.run, as the README says
    assert main.returncode == 0, main.stderr[-3000:]
    adder = run_cli(["task=adder"], tmp_path, timeout=1200)
    assert adder.returncode == 0, adder.stderr[-3000:]
    got = {
        key: printed(main.stderr, key) for key in ("final/smooth_loss", "objective val/loss_warm")
    }
    got["iters_to_100"] = printed(adder.stderr, "iters_to_100")
    print(f"machine: {here} ({'the' if exact else 'not the'} one the README was measured on)")
    print(f"README: {documented}\nprinted: {got}")
    for key, value in documented.items():
        assert agrees(got[key], value, exact), (key, got[key], value, here)

    # the trained network's viewer page, as a reviewer opens it
    run_id = re.search(r"rnnlab: run id ([0-9a-f]{32})", main.stdout).group(1)
    (page,) = (tmp_path / "mlruns").glob(f"**/{run_id}/artifacts/inspect/index.html")
    out = Path(os.environ.get("RNNLAB_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    if not browser.available():
        pytest.skip("chromium is not installed: the numbers are checked, the page is not")
    b = browser.Browser(1300, 1000)
    try:
        b.open(page.resolve().as_uri())
        b.wait_for("document.readyState === 'complete'")
        measured, claims = b.eval(browser.CONTRAST_JS), b.eval(browser.CLAIMS_JS)
        b.screenshot(out / "viewer_main_job.png")
    finally:
        b.close()
    print(f"viewer: lowest contrast {measured['worst']:.2f}:1 over {measured['n']} elements")
    assert measured["worst"] >= 4.5 and claims and min(abs(r) for r in claims) >= 0.1
