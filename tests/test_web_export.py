"""Browser bundle: layout and sizes, the preview server, and the page in real headless Chromium.

The bundle is built once from a 2-layer cut of the bundled encoder (INT8 exported by web_export
itself) and served on 127.0.0.1 by serve.py's own server in a thread. Chromium is the Debian
package driven by Python playwright (never a downloaded browser; shared stack notes, "Browser").
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import unicodedata
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core import paths, web_export
from core.errors import ConfigError
from core.labels import DEFAULT_LABEL_NAMES
from core.run import RunFolder

GOLDEN = json.loads((Path(__file__).parent / "data" / "web_golden.json").read_text("utf-8"))
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = paths.REPO_ROOT / "test-artifacts"
ORT_FILES = {"ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"}
PAYLOAD = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>굵게</b>'

pytestmark = pytest.mark.skipif(bool(web_export.missing_vendor_files()),
                                reason="npm packages missing: run `cd web_export && npm ci`")


def _tiny_run_source(request, tmp_path_factory) -> Path:
    """The shared `tiny_e5_run` fixture when conftest has it, else a run built here."""
    try:
        return request.getfixturevalue("tiny_e5_run")
    except pytest.FixtureLookupError:
        pass
    import torch
    from transformers import AutoModelForSequenceClassification

    base = request.getfixturevalue("tiny_e5_dir")
    run = tmp_path_factory.mktemp("web_run")
    labels = list(DEFAULT_LABEL_NAMES)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)})
    model.save_pretrained(run / "model")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(base / name, run / "model" / name)
    return run


@pytest.fixture(scope="module")
def built(request, tmp_path_factory):
    """(run folder without INT8, result of web_export.run with --zip, bundle folder)."""
    src = _tiny_run_source(request, tmp_path_factory)
    run = tmp_path_factory.mktemp("web") / "tiny"
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("onnx", "openvino", "bundle*",
                                                            "export_report.json"))
    small = run.parent / "small.jsonl"
    seed = paths.SEED_PATH.read_text(encoding="utf-8").splitlines()
    small.write_text("\n".join(seed[:21]) + "\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(paths.WORKSPACE_ENV, str(run.parent / "ws"))
        events: list[dict] = []
        # The golden ids were made at GOLDEN's max_length; the run's own limit may differ.
        config = web_export.WebExportConfig(model=str(run), zip=True, export_data=str(small), allow_int8_drift=True,
                                            max_length=GOLDEN["max_length"])
        result = web_export.run(config, events.append)
    assert events[-1]["done"] == events[-1]["total"]
    return run, result, Path(result.out_dir)


def test_bundle_layout_facts_and_size_breakdown(built):
    run, result, bundle = built
    assert result.exported_int8 and (run / "onnx" / "model_quantized.onnx").is_file()
    assert bundle == run / "bundle"
    files = web_export.file_sizes(bundle)
    for name in ("index.html", "app.js", "style.css", "sw.js", "serve.py", "README.md",
                 "config.json", "tokenizer.json", "tokenizer_config.json",
                 "onnx/model_quantized.onnx", "model_facts.json", "bundle_report.json",
                 "vendor/tokenizers/tokenizers.min.mjs"):
        assert name in files, name
    # Exactly the three onnxruntime-web files the wasm page loads, nothing else from dist/.
    assert {f.split("/")[-1] for f in files if f.startswith("vendor/ort/")} == ORT_FILES
    assert list((bundle / "onnx").iterdir()) == [bundle / "onnx" / "model_quantized.onnx"]
    # One INT8 file: the bundle ships the export's file byte for byte (no browser-only copy).
    assert (bundle / "onnx" / "model_quantized.onnx").read_bytes() == \
        (run / "onnx" / "model_quantized.onnx").read_bytes()

    facts = json.loads((bundle / "model_facts.json").read_text("utf-8"))
    config = json.loads((run / "model" / "config.json").read_text("utf-8"))
    assert facts["labels"] == [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    assert facts["max_length"] == GOLDEN["max_length"] and facts["end_special_tokens"] == 1
    assert facts["inputs"] == ["input_ids", "attention_mask"]  # XLM-R: no token_type_ids
    seed_texts = {json.loads(line)["text"] for line in paths.SEED_PATH.open(encoding="utf-8")}
    assert len(facts["examples"]) == 8 and all(e["text"] in seed_texts for e in facts["examples"])

    report = RunFolder.of(bundle).bundle_report(bundle)
    assert report["files"] == {k: v for k, v in files.items() if k != "bundle_report.json"}
    assert sum(report["breakdown_bytes"].values()) == report["total_bytes"]
    assert report["breakdown_bytes"]["model"] == files["onnx/model_quantized.onnx"]
    assert report["breakdown_bytes"]["onnxruntime-web"] > 10e6  # the wasm binary
    assert result.model_mb == round(files["onnx/model_quantized.onnx"] / 1e6, 2)
    assert result.total_mb == round(report["total_bytes"] / 1e6, 2) < 60
    assert abs(sum(result.breakdown_mb.values()) - result.total_mb) < 0.05

    with zipfile.ZipFile(result.zip_path) as zf:
        names = {n.split("/", 1)[1] for n in zf.namelist()}
        assert {n.split("/", 1)[0] for n in zf.namelist()} == {"bundle"}
        assert zf.testzip() is None
    assert names == set(files)


def test_cli_rebuilds_in_place_and_refuses_a_foreign_folder(built, tmp_path):
    from core import web_export_cli

    run = built[0]
    out = tmp_path / "site"
    parser = argparse.ArgumentParser()
    web_export_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["web-export", "--model", str(run), "--out", str(out),
                              "--examples", "3"])
    for _ in range(2):  # the second build replaces the first
        code, result = args.handler(args)
        assert code == 0 and not result.exported_int8 and result.zip_path is None
    facts = json.loads((out / "model_facts.json").read_text("utf-8"))
    assert len(facts["examples"]) == 3
    # Without --max-length the page truncates where the Python runtimes do.
    tok_cfg = json.loads((run / "model" / "tokenizer_config.json").read_text("utf-8"))
    assert facts["max_length"] == min(tok_cfg["model_max_length"], 512)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no temp or old folder left

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a bundle"):
        web_export.run(web_export.WebExportConfig(model=str(run), out_dir=str(foreign)))
    assert (foreign / "keep.txt").read_text() == "mine"
    with pytest.raises(web_export.WebExportError, match="npm ci"):
        web_export.run(web_export.WebExportConfig(model=str(run), node_modules=str(tmp_path)))
    with pytest.raises(ConfigError):
        web_export.WebExportConfig(model=str(run), max_length=4)


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, b""


def test_preview_server_types_and_isolation_headers(built):
    bundle = built[2]
    server, url = web_export.serve_bundle(bundle)
    plain, plain_url = web_export.serve_bundle(bundle, isolation=False)
    try:
        assert url.startswith("http://127.0.0.1:") and server.server_address[0] == "127.0.0.1"
        status, headers, body = _get(url + "vendor/ort/ort-wasm-simd-threaded.wasm")
        assert status == 200 and headers["Content-Type"] == "application/wasm"
        assert body[:4] == b"\0asm"
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert _get(url + "vendor/ort/ort.wasm.min.mjs")[1]["Content-Type"] == "text/javascript"
        assert _get(url + "missing.wasm")[0] == 404
        status, headers, _ = _get(plain_url + "index.html")
        assert status == 200 and headers["Cross-Origin-Embedder-Policy"] is None
    finally:
        server.shutdown()
        plain.shutdown()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make setup installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def _wait(page, expr: str, timeout: float = 30.0):
    """Poll with page.evaluate: the page's CSP forbids the eval wait_for_function relies on."""
    from playwright.sync_api import Error

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = page.evaluate(expr)
        except Error as exc:  # the service worker path reloads the page once
            if "context was destroyed" not in str(exc):
                raise
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {expr}: {page.evaluate('window.bundle.error')}")


def _open(browser, url: str, service_workers: str = "block"):
    context = browser.new_context(service_workers=service_workers, viewport={"width": 900,
                                                                             "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda d: (errors.append("dialog: " + d.message), d.dismiss()))
    page.goto(url)
    _wait(page, "window.bundle && (window.bundle.firstPredictionMs || window.bundle.error)")
    assert page.evaluate("window.bundle.error") is None
    return context, page, errors


def _python_logits(bundle: Path, texts: list[str]) -> np.ndarray:
    from core.runtimes import load

    facts = json.loads((bundle / "model_facts.json").read_text("utf-8"))
    runtime = load(bundle / "onnx" / "model_quantized.onnx", max_length=facts["max_length"])
    # One text a call, like the page: dynamic INT8 quantizes activations per tensor, so padding
    # in a batch would change the numbers.
    return runtime.logits(texts, batch_size=1)


def test_golden_ids_match_the_python_tokenizer(built):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built[2])
    cases = GOLDEN["cases"]
    got = [tok(c["text"], truncation=True, max_length=GOLDEN["max_length"])["input_ids"]
           for c in cases]
    assert got == [c["ids"] for c in cases], "tokenizer drifted: run tests/data/make_web_golden.py"
    tags = {t for c in cases for t in c["tags"]}
    assert len(cases) >= 50 and {"emoji", "nfd", "mixed", "long"} <= tags
    assert any(c["text"] != unicodedata.normalize("NFC", c["text"]) for c in cases)
    assert all(len(c["ids"]) == GOLDEN["max_length"] and c["ids"][-1] == tok.eos_token_id
               for c in cases if "long" in c["tags"])


def test_isolated_page_matches_python_ids_and_logits(built, browser):
    bundle = built[2]
    server, url = web_export.serve_bundle(bundle)
    try:
        context, page, errors = _open(browser, url)
        state = page.evaluate("({iso: crossOriginIsolated, threads: window.bundle.threads, "
                              "first: window.bundle.firstPredictionMs, cores: navigator."
                              "hardwareConcurrency})")
        assert state["iso"] is True and state["threads"] == min(4, state["cores"])
        assert state["first"] < 3000, state  # ms from navigation start to the first prediction
        assert page.locator("#facts").get_attribute("data-threads") == str(state["threads"])

        texts = [c["text"] for c in GOLDEN["cases"]]
        js_ids = page.evaluate("(texts) => texts.map((t) => window.bundle.encode(t))", texts)
        for case, ids in zip(GOLDEN["cases"], js_ids):
            assert ids == case["ids"], case["name"]

        js = np.array(page.evaluate(
            "async (texts) => { const out = []; for (const t of texts) "
            "out.push(await window.bundle.logits(t)); return out; }", texts))
        py = _python_logits(bundle, texts)
        # Measured here: max 1.5e-8 (trained tiny run), 7.7e-4 (random head). FP32 graphs agree to
        # 1e-7; INT8 differs only where a 1-ulp LayerNorm difference (wasm vs x86 kernels) flips
        # one activation's INT8 rounding.
        assert js.shape == py.shape and np.abs(js - py).max() < 1e-3
        assert (js.argmax(-1) == py.argmax(-1)).all()

        result = page.evaluate("window.classify('오늘 시험 합격해서 너무 기뻐!')")
        labels = json.loads((bundle / "model_facts.json").read_text("utf-8"))["labels"]
        assert list(result["scores"]) == labels and result["ms"] > 0
        assert abs(sum(result["scores"].values()) - 1) < 1e-5
        assert result["label"] == max(result["scores"], key=result["scores"].get)
        bars = page.locator("#bars .bar")
        assert bars.count() == len(labels)
        assert page.locator("#bars .bar.best").get_attribute("data-label") == result["label"]
        assert page.locator("#label").text_content() == result["label"]
        assert errors == []
        context.close()
    finally:
        server.shutdown()


def test_payload_is_text_and_page_works_without_isolation(built, browser):
    bundle = built[2]
    server, url = web_export.serve_bundle(bundle, isolation=False)
    try:
        context, page, errors = _open(browser, url + "?sw=0")
        assert page.evaluate("crossOriginIsolated") is False
        assert page.evaluate("window.bundle.threads") == 1
        assert "not cross-origin isolated" in page.locator("#facts").text_content()

        page.fill("#text", PAYLOAD)
        page.click("#predict")
        _wait(page, "document.querySelectorAll('#history tbody tr').length >= 2")
        cell = page.locator("#history tbody tr").first.locator("td").first
        assert cell.text_content() == PAYLOAD
        assert page.evaluate("document.querySelectorAll('#history img, #history script, "
                             "#history b').length") == 0
        assert page.evaluate("window.__pwned") is None and errors == []
        expected = _python_logits(bundle, [PAYLOAD])[0]
        got = np.array(page.evaluate("(t) => window.bundle.logits(t)", PAYLOAD))
        assert np.abs(got - expected).max() < 1e-3
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web_bundle.png"), full_page=True)
        context.close()
    finally:
        server.shutdown()


def test_service_worker_isolates_a_page_the_host_does_not(built, browser):
    server, url = web_export.serve_bundle(built[2], isolation=False)
    try:
        context, page, errors = _open(browser, url, service_workers="allow")
        # sw.js added COOP/COEP and the page reloaded itself once: now multi-threaded.
        assert page.evaluate("crossOriginIsolated") is True
        assert page.evaluate("navigator.serviceWorker.controller !== null")
        assert page.evaluate("window.bundle.threads") > 1 or \
            page.evaluate("navigator.hardwareConcurrency") == 1
        assert page.evaluate("window.classify('괜찮아')")["label"]
        assert errors == []
        context.close()
    finally:
        server.shutdown()


def test_bert_bundle_feeds_token_type_ids_and_matches_python(browser, request, tmp_path):
    """A BERT run (WordPiece tokenizer, graph takes token_type_ids) works in the page too."""
    run = tmp_path / "bert"
    shutil.copytree(request.getfixturevalue("tiny_bert_run"), run,
                    ignore=shutil.ignore_patterns("onnx", "openvino", "bundle*"))
    small = tmp_path / "small.jsonl"
    small.write_text("\n".join(paths.SEED_PATH.read_text("utf-8").splitlines()[:21]) + "\n",
                     encoding="utf-8")
    result = web_export.run(web_export.WebExportConfig(model=str(run), export_data=str(small),
                                                       allow_int8_drift=True))
    bundle = Path(result.out_dir)
    facts = json.loads((bundle / "model_facts.json").read_text("utf-8"))
    assert "token_type_ids" in facts["inputs"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundle)
    texts = [c["text"] for c in GOLDEN["cases"]]
    server, url = web_export.serve_bundle(bundle)
    try:
        context, page, errors = _open(browser, url)
        js_ids = page.evaluate("(texts) => texts.map((t) => window.bundle.encode(t))", texts)
        py_ids = [tok(t, truncation=True, max_length=facts["max_length"])["input_ids"]
                  for t in texts]
        assert js_ids == py_ids
        js = np.array(page.evaluate(
            "async (texts) => { const out = []; for (const t of texts) "
            "out.push(await window.bundle.logits(t)); return out; }", texts[:20]))
        assert np.abs(js - _python_logits(bundle, texts[:20])).max() < 1e-3
        assert errors == []
        context.close()
    finally:
        server.shutdown()


def test_classify_called_while_loading_waits_and_ready_rejects_on_a_load_error(built, browser):
    """window.classify right after navigation waits for the model; bundle.ready is a Promise."""
    server, url = web_export.serve_bundle(built[2])
    model_url = url + "onnx/model_quantized.onnx"
    try:
        context = browser.new_context(service_workers="block")
        held = []  # the model download, held until classify has been called
        context.route(model_url, lambda route: held.append(route))
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url, wait_until="domcontentloaded")  # app.js (a module) has run; no model yet
        deadline = time.time() + 30
        while not held and time.time() < deadline:
            page.wait_for_timeout(20)
        assert held, "the page never asked for the model"
        early = page.evaluate("() => { window.__early = window.classify('오늘 정말 기분이 좋아');"
                              " return { loaded: window.bundle.loaded, "
                              "promise: window.bundle.ready instanceof Promise }; }")
        assert early == {"loaded": False, "promise": True}
        held[0].continue_()
        result = page.evaluate("window.__early")
        labels = json.loads((built[2] / "model_facts.json").read_text("utf-8"))["labels"]
        assert result["label"] in labels and list(result["scores"]) == labels
        ready = page.evaluate("window.bundle.ready")
        assert ready["labels"] == labels and page.evaluate("window.bundle.loaded") is True
        assert errors == []
        context.close()

        # A real load error: ready and every classify call reject with it (no unhandled error).
        context = browser.new_context(service_workers="block")
        context.route(model_url, lambda route: route.fulfill(status=404, body="missing"))
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url, wait_until="domcontentloaded")
        got = page.evaluate("async () => { const c = window.classify('괜찮아').then(() => 'ok', "
                            "(e) => e.message); const r = await window.bundle.ready.then("
                            "() => 'ok', (e) => e.message); return [await c, r, "
                            "await window.classify('또').catch((e) => e.message)]; }")
        assert all("HTTP 404" in g for g in got), got
        assert page.evaluate("window.bundle.error") == got[1] and errors == []
        context.close()
    finally:
        server.shutdown()
