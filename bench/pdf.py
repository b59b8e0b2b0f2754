"""Report PDF benchmark: CPU per report (render + PAdES signature), as the PDF worker process spends it.

In this process, on a fresh data directory: the common-characters font subset is built (as the
delivery service caches it), the CA and one reader's key are issued and loaded, then reports
are rendered (``pdf.render``, the imaging report with two signers, order, QR code and 互认 mark)
and signed (``PadesSigner.sign``) in a loop.  ``fpdf2 alone`` is the same render with fpdf2
parsing the font for every document, as before issue 14; ``font kept`` is the default
(``fonts.SharedFonts``).  The two alternate report by report, so a machine shared with other
work slows both alike.  CPU = ``time.process_time`` of this process; prints medians and p90.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fpdf import FPDF

ROOT = Path(__file__).resolve().parents[1]


def _variants():
    from services.delivery import pdf

    class FpdfAlone(FPDF):  # the report document without the kept font
        footer = pdf._Document.footer

    return {"fpdf2 alone": FpdfAlone, "font kept": pdf._Document}


def run(n: int, work: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from services.core.localtime import LocalTime
    from services.delivery import pdf
    from services.delivery.ca import ConsortiumCA
    from services.delivery.fonts import Fonts
    from services.delivery.model import result_from_report
    from services.delivery.settings import DEFAULT_FONT
    from services.delivery.signing import PadesSigner
    from tests.delivery.test_report_document import IMAGING, ORDER, STUDY, URL, CREATED

    fonts = Fonts(DEFAULT_FONT, work / "cache")
    fonts.prepare()
    while not fonts.subset_path.exists():  # as the delivery service has it after its first start
        if fonts._building is not None and not fonts._building.is_alive() and not fonts.subset_path.exists():
            raise RuntimeError("the font subset was not built")
        time.sleep(0.1)
    result = result_from_report(IMAGING, at=CREATED)
    font = fonts.for_text(*(v for v in (*result.values(), *STUDY.values()) if isinstance(v, str)))
    signer = PadesSigner(ConsortiumCA(work / "ca", "bench-secret-" + "x" * 20), names={"dr-wang": "王建国"})
    layout = pdf.Layout(verification_url=URL, recognition_mark="HR", order=ORDER)
    variants = _variants()
    render_ms: dict[str, list[float]] = {v: [] for v in variants}
    sign_ms: list[float] = []
    for i in range(n + 1):  # the first of each: parsing, key loading (not counted)
        for name, cls in variants.items():
            pdf._Document = cls
            started = time.process_time()
            rendered = pdf.render(result, study=STUDY, institution="城关镇卫生院", centre="县域医学影像诊断中心",
                                  font=font, local=LocalTime.named(), layout=layout)
            took = (time.process_time() - started) * 1000
            if name == "font kept":
                started = time.process_time()
                signer.sign(rendered, "dr-wang")
                if i:
                    sign_ms.append((time.process_time() - started) * 1000)
            if i:
                render_ms[name].append(took)
    pdf._Document = variants["font kept"]

    def figures(values: list[float]) -> dict:
        q = statistics.quantiles(values, n=10, method="inclusive")
        return {"p50_ms": round(statistics.median(values), 1), "p90_ms": round(q[8], 1)}

    sign = figures(sign_ms)
    return {"reports": n, "font": Path(font).name, "load_before": os.getloadavg()[0],
            "render": {name: figures(v) for name, v in render_ms.items()}, "sign": sign,
            "render_and_sign_p50_ms": {name: round(statistics.median(v) + sign["p50_ms"], 1)
                                       for name, v in render_ms.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench pdf", description=__doc__)
    p.add_argument("--quick", action="store_true", help="10 reports (a smoke run)")
    p.add_argument("--reports", type=int, default=50)
    args = p.parse_args(argv)
    n = 10 if args.quick else args.reports
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="yilian-bench-pdf-") as tmp:
        figures = run(n, Path(tmp))
    figures["load"] = [round(x, 2) for x in (*load, *os.getloadavg())]
    print(f"report PDF: CPU per report, {n} reports ({figures['font']}); load average {figures['load']}")
    for name, f in figures["render"].items():
        print(f"  render, {name:12}  p50 {f['p50_ms']:7.1f} ms   p90 {f['p90_ms']:7.1f} ms   "
              f"render + sign p50 {figures['render_and_sign_p50_ms'][name]:7.1f} ms")
    print(f"  sign (PAdES, key loaded)  p50 {figures['sign']['p50_ms']:7.1f} ms   p90 {figures['sign']['p90_ms']:7.1f} ms")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
