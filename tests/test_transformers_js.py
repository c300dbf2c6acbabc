"""The bundle loads in transformers.js (the version pinned in web_export/package.json), offline.

The bundle keeps the transformers.js layout (config.json with id2label, tokenizer.json,
tokenizer_config.json, onnx/model_quantized.onnx) so web developers can use it from
`@huggingface/transformers` instead of the bundle's page. This test keeps that true: headless
Chromium (Debian package, Python playwright) loads transformers.js's own dist files and the bundle
from one 127.0.0.1 server, with every other host refused, and the pipeline's scores must match
the bundle page's `window.classify` on the golden sentences and the page's examples.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from core import paths, web_export

GOLDEN = json.loads((Path(__file__).parent / "data" / "web_golden.json").read_text("utf-8"))
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TJS = web_export.NODE_MODULES / "@huggingface" / "transformers"
MODEL_ID = "korean-emotion"  # served as /models/korean-emotion/, transformers.js's browser default

pytestmark = [
    pytest.mark.skipif(bool(web_export.missing_vendor_files()) or not TJS.is_dir(),
                       reason="npm packages missing: run `make setup` (npm ci in web_export/)"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed"),
]


def _tjs_ort_dist() -> Path:
    """The onnxruntime-web dist/ that transformers.js depends on (nested, or hoisted when the
    versions agree): its JS glue and wasm must match the ORT bundled into transformers.min.js."""
    want = json.loads((TJS / "package.json").read_text("utf-8"))["dependencies"]["onnxruntime-web"]
    for root in (TJS / "node_modules", web_export.NODE_MODULES):
        pkg = root / "onnxruntime-web" / "package.json"
        if pkg.is_file() and json.loads(pkg.read_text("utf-8"))["version"] == want:
            return pkg.parent / "dist"
    raise AssertionError(f"onnxruntime-web {want} (transformers.js's) is not installed: npm ci")


@pytest.fixture(scope="module")
def bundle(request, tmp_path_factory) -> Path:
    """A bundle built from the shared tiny trained run (INT8 exported here, in a copy)."""
    run = tmp_path_factory.mktemp("tjs") / "tiny"
    shutil.copytree(request.getfixturevalue("tiny_e5_run"), run,
                    ignore=shutil.ignore_patterns("onnx", "openvino", "bundle*",
                                                  "export_report.json"))
    small = run.parent / "small.jsonl"
    small.write_text("\n".join(paths.SEED_PATH.read_text("utf-8").splitlines()[:21]) + "\n",
                     encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(paths.WORKSPACE_ENV, str(run.parent / "ws"))
        # The default max_length (the tokenizer's own): transformers.js truncates where
        # tokenizer_config.json's model_max_length says, and the page where model_facts.json does.
        result = web_export.run(web_export.WebExportConfig(model=str(run), export_data=str(small)))
    return Path(result.out_dir)


@pytest.fixture(scope="module")
def site(bundle, tmp_path_factory):
    """One loopback server: /models/<id>/ the bundle, /tjs/ transformers.js dist, /ort/ its ORT."""
    root = tmp_path_factory.mktemp("site")
    (root / "models").mkdir()
    (root / "models" / MODEL_ID).symlink_to(bundle, target_is_directory=True)
    (root / "tjs").symlink_to(TJS / "dist", target_is_directory=True)
    (root / "ort").symlink_to(_tjs_ort_dist(), target_is_directory=True)
    (root / "blank.html").write_text('<!doctype html><meta charset="utf-8"><title>tjs</title>',
                                     encoding="utf-8")
    server, url = web_export.serve_bundle(root)
    yield url
    server.shutdown()


@pytest.fixture(scope="module")
def offline_context():
    """(context, outside): a browser context that aborts and records any non-loopback request."""
    from playwright.sync_api import sync_playwright

    outside: list[str] = []

    def guard(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = browser.new_context(service_workers="block")
        context.route("**/*", guard)
        yield context, outside
        browser.close()


# Runs in the blank page: what a web developer writes (README.md of the bundle), plus wasmPaths
# so onnxruntime-web's wasm comes from this server instead of its default CDN.
TJS_RUN = """async ({ texts, model }) => {
  const { pipeline, env } = await import("/tjs/transformers.min.js");
  env.allowLocalModels = true;
  env.allowRemoteModels = false;
  env.localModelPath = "/models/";  // a path: transformers.js 4.3 skips the tokenizer for a URL
  env.backends.onnx.wasm.wasmPaths = new URL("/ort/", location.href).href;
  const classify = await pipeline("text-classification", model, { dtype: "q8" });
  const scores = [];
  for (const t of texts) scores.push(await classify(t, { top_k: null }));
  const encode = (t) => classify.tokenizer(t, { truncation: true }).input_ids.data;
  const ids = texts.map((t) => Array.from(encode(t), Number));
  return { version: env.version, scores, ids, eos: classify.tokenizer.eos_token_id };
}"""

PAGE_RUN = """async (texts) => {
  await window.bundle.ready;
  const out = [];
  for (const t of texts) out.push(await window.classify(t));
  return { results: out, ids: texts.map((t) => window.bundle.encode(t)) };
}"""


def test_transformers_js_loads_the_bundle_offline_and_matches_the_page(bundle, site,
                                                                      offline_context):
    context, outside = offline_context
    facts = json.loads((bundle / "model_facts.json").read_text("utf-8"))
    cases = GOLDEN["cases"] + [{"name": f"example_{i}", "text": e["text"]}
                               for i, e in enumerate(facts["examples"])]
    texts = [c["text"] for c in cases]
    requested: list[str] = []
    context.on("request", lambda r: requested.append(r.url))

    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(site + "blank.html")
    tjs = page.evaluate(TJS_RUN, {"texts": texts, "model": MODEL_ID})
    pinned = json.loads((web_export.WEB_DIR / "package.json").read_text("utf-8"))
    assert tjs["version"] == pinned["dependencies"]["@huggingface/transformers"]
    assert f"transformers.js {tjs['version']}" in (bundle / "README.md").read_text("utf-8")

    own = context.new_page()
    own.on("pageerror", lambda exc: errors.append(str(exc)))
    own.goto(f"{site}models/{MODEL_ID}/index.html")
    mine = own.evaluate(PAGE_RUN, texts)
    assert outside == [] and errors == []
    assert all(urlsplit(u).hostname == "127.0.0.1" for u in requested)
    assert f"{site}models/{MODEL_ID}/onnx/model_quantized.onnx" in requested

    max_len = facts["max_length"]
    # transformers.js truncates at tokenizer_config.json's limit, the page at model_facts.json's.
    tok_cfg = json.loads((bundle / "tokenizer_config.json").read_text("utf-8"))
    assert tok_cfg["model_max_length"] == max_len
    for case, got, page_result, tjs_ids, page_ids in zip(cases, tjs["scores"], mine["results"],
                                                        tjs["ids"], mine["ids"]):
        scores = {s["label"]: s["score"] for s in got}
        assert set(scores) == set(facts["labels"]), case["name"]
        # Same top label as the page; the same scores too (measured: equal to 1.2e-8).
        assert got[0]["label"] == page_result["label"], case["name"]
        if tjs_ids == page_ids:
            assert max(abs(scores[k] - v) for k, v in page_result["scores"].items()) < 1e-4
        else:  # documented in the bundle README: transformers.js drops the final </s>
            assert len(page_ids) == len(tjs_ids) == max_len, case["name"]
            assert tjs_ids[:-1] == page_ids[:-1] and page_ids[-1] == tjs["eos"] != tjs_ids[-1]
    truncated = [c["name"] for c, a, b in zip(cases, tjs["ids"], mine["ids"]) if a != b]
    assert truncated and all("long" in c.get("tags", ()) for c in cases
                             if c["name"] in truncated)
    page.close()
    own.close()
