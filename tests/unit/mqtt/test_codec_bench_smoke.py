"""The codec benchmark script still runs (tiny sizes; the figures themselves are not judged)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "bench" / "codec_bench.py"


def test_codec_bench_runs_and_reports_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--count", "300", "--repeat", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    for figure in (
        "decode-qos0-one-buffer",
        "decode-qos0-4k-chunks",
        "decode-qos1-one-buffer",
        "decode-v5-qos1-bare",
        "decode-v5-qos1-props",
        "encode-puback-batch",
        "encode-publish-qos0",
        "framing-floor (peer)",
    ):
        assert f"{figure} " in result.stdout
    assert "packets/s" in result.stdout
    assert "v5 PUBLISH decode cost / 3.1.1 (props) = " in result.stdout
    assert result.stdout.startswith("machine: CPython 3.")


def test_codec_bench_refuses_bad_arguments_with_exit_code_2() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--count", "0"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
