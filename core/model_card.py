"""Model cards: a Hugging Face ``README.md`` for a trained run's ``model/`` folder and for a bundle.

Everything comes from the run's own files (metrics.json, model/config.json, export_report.json,
bundle_report.json) through ``RunFolder``; nothing absolute is written (training writes the card
into a staging folder that is renamed afterwards), so a folder can be pushed to the Hub as it is.
Card format: https://huggingface.co/docs/hub/model-cards (metadata and ``model-index``:
https://github.com/huggingface/hub-docs/blob/main/modelcard.md). The confusion matrix is an SVG
drawn here (matplotlib is not a dependency; the app's charts use plotly).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from xml.sax.saxutils import escape

from core import paths
from core.labels import describe
from core.run import RunFolder

CARD = "README.md"
IMAGE = "confusion_matrix.svg"
# Bundled base models: the Hub model each was built from, and that model's license.
BUNDLED_BASES = {"e5-small-ko": ("intfloat/multilingual-e5-small", "mit")}
ARTIFACT_NAMES = {"pytorch_fp32": "PyTorch FP32", "onnx_fp32": "ONNX FP32", "onnx_fp32_optimized":
                  "ONNX FP32 optimized", "onnx_int8_dynamic": "ONNX INT8 dynamic",
                  "onnx_int8_integer": "ONNX INT8 integer (per token)",
                  "onnx_int8_weightonly": "ONNX INT8 weight-only", "openvino_fp32":
                  "OpenVINO FP32", "openvino_int8": "OpenVINO INT8"}


# --- facts ---------------------------------------------------------------------------------------
def run_name(run: RunFolder) -> str:
    """The run's name; a staging folder ``.NAME.tmp-XXXXXX`` (training) is named NAME."""
    found = re.fullmatch(r"\.(.+)\.tmp-[0-9a-f]+", run.name)
    return found.group(1) if found else run.name


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def base_info(base: str) -> dict:
    """How the card names the base model: {"name", "hub_id" or None, "license"}."""
    if base in BUNDLED_BASES:
        hub_id, license_ = BUNDLED_BASES[base]
        return {"name": base, "hub_id": hub_id, "license": license_}
    path = Path(base)
    if base.startswith((".", "/", "~")) or path.is_dir():  # a local folder: never its path
        manifest = _read_json(path.expanduser() / "manifest.json")
        if manifest.get("name") in BUNDLED_BASES:
            return base_info(manifest["name"])
        return {"name": f"A local model folder ({path.name})", "hub_id": None, "license": "other"}
    return {"name": base, "hub_id": base, "license": "other"}  # a hub id: its license is its own


def _dataset(config: dict, sizes: dict) -> dict:
    data = config.get("data")
    seed = data in (None, "", "seed") or Path(str(data)).expanduser().resolve() == \
        paths.SEED_PATH.resolve()
    name = "seed" if seed else Path(str(data)).stem
    shown = "the shipped hand-written seed set (`data/seed/seed.jsonl`)" if seed \
        else f"`{Path(str(data)).name}`"
    return {"name": name, "shown": shown, "seed": seed, "size": sum(sizes.values())}


def facts(run: RunFolder) -> dict:
    """What every card section reads, gathered once from the run's files."""
    m = run.metrics()
    config, sizes = m.get("config") or {}, m.get("split_sizes") or {}
    return {"name": run_name(run), "m": m, "config": config, "sizes": sizes,
            "split": m.get("split") or config,
            "labels": run.labels() or list(m.get("labels") or []),
            "base": base_info(str(m.get("base") or config.get("base") or "")),
            "data": _dataset(config, sizes), "export": run.export_report(),
            "model_type": _read_json(run.model_dir / "config.json").get("model_type"),
            "max_length": run.max_length, "eval": m.get("test") or m.get("val") or {},
            "eval_split": "test" if m.get("test") else "validation"}


# --- front matter --------------------------------------------------------------------------------
def _scalar(value) -> str:
    """JSON numbers, booleans, null and strings are YAML scalars too (strings double-quoted)."""
    plain = value is None or isinstance(value, (bool, int, float))
    return json.dumps(value if plain else str(value), ensure_ascii=False)


def yaml_lines(obj, pad: str = "") -> list[str]:
    """Block-style YAML for dicts, lists and scalars (what the card's metadata needs)."""
    lines = []
    items = obj.items() if isinstance(obj, dict) else ((None, v) for v in obj)
    for key, value in items:
        head = f"{pad}{key}:" if key is not None else f"{pad}-"
        if isinstance(value, (dict, list)) and value:
            if key is None and isinstance(value, dict):  # "- key: value" then the rest aligned
                sub = yaml_lines(value, pad + "  ")
                lines += [f"{pad}- {sub[0].lstrip()}"] + sub[1:]
            else:
                lines += [head] + yaml_lines(value, pad + "  ")
        else:
            lines.append(f"{head} {_scalar(value) if value not in ([], {}) else value}")
    return lines


def metadata(f: dict, bundle: bool = False) -> dict:
    """The card's YAML metadata: language, license, tags, base model, metrics, model-index."""
    tags = ["text-classification", "korean", "emotion-classification"]
    tags += [f["model_type"]] if f["model_type"] else []
    tags += ["onnx", "int8"] if f["export"] or bundle else []
    tags += ["transformers.js", "onnxruntime-web"] if bundle else []
    meta = {"language": ["ko"], "license": f["base"]["license"]}
    if f["base"]["license"] == "other" and f["base"]["hub_id"]:
        meta["license_link"] = f"https://huggingface.co/{f['base']['hub_id']}"
    meta |= {"library_name": "transformers.js" if bundle else "transformers",
             "pipeline_tag": "text-classification", "tags": tags}
    if f["base"]["hub_id"]:
        meta["base_model"] = f["base"]["hub_id"]
    meta["metrics"] = ["accuracy", "f1"]
    ev = f["eval"]
    if ev:
        dataset = {"name": f["data"]["name"], "type": f["data"]["name"], "split": f["eval_split"]}
        scores = [{"type": "accuracy", "value": round(ev["accuracy"], 4), "name": "Accuracy"},
                  {"type": "f1", "value": round(ev["macro_f1"], 4), "name": "Macro F1",
                   "args": {"average": "macro"}}]
        meta["model-index"] = [{"name": f"korean-emotion-{f['name']}", "results": [{
            "task": {"type": "text-classification", "name": "Text Classification"},
            "dataset": dataset, "metrics": scores}]}]
    return meta


def front_matter(meta: dict) -> str:
    return "---\n" + "\n".join(yaml_lines(meta)) + "\n---\n"


# --- sections ------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list], align: str = "") -> str:
    """A markdown table; ``align`` has one letter per column, "r" for right-aligned."""
    line = lambda cells: "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"  # noqa
    rule = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")]
    return "\n".join([line(header), "| " + " | ".join(rule) + " |", *map(line, rows)]) + "\n"


INTENDED = ("## Intended use\n\nClassifies the emotion expressed in a short Korean text (a chat "
            "message, diary line, post, review or work message) into one of {n} labels. Meant for "
            "prototypes, analytics and research on Korean text; not for clinical or mental-health "
            "assessment, nor for decisions about a person.\n")
USAGE_BUNDLE = ("## How to use\n\nServe this folder from any static host and open `index.html`, "
                "or load it with transformers.js (`pipeline(\"text-classification\", ..., { dtype: "
                "\"q8\" })`) or onnxruntime-web; see *Hosting and usage* below.\n")
SOURCES = {"config": "; fractions from the training config",
           "saved with the dataset": "; the split saved with the dataset"}


def _labels(f: dict) -> str:
    known = [(i, name, describe(name)) for i, name in enumerate(f["labels"])]
    rows = [[i, name, d.ko if d else "", d.en if d else ""] for i, name, d in known]
    note = "" if all(describe(n) for n in f["labels"]) else \
        "\nA custom label set: labels without a definition here come from the dataset.\n"
    return "## Labels\n\n" + _table(["id", "label", "정의", "definition"], rows) + note


def _training(f: dict) -> str:
    m, c, s, how = f["m"], f["config"], f["sizes"], f["split"]
    split = f"train {s.get('train')} / validation {s.get('val')} / test {s.get('test')}"
    if "val_frac" in how:
        split += (f", stratified by label (each label shuffled with seed {how.get('seed')}, "
                  f"{how['val_frac']:.0%} validation, {how['test_frac']:.0%} test"
                  + SOURCES.get(how.get("source"), "") + ")")
    k, n = m.get("freeze_below", 0), m.get("num_layers", "?")
    layers = "layer 0" if k == 1 else f"layers 0-{k - 1}"
    frozen = (f"embeddings and encoder {layers} frozen (K = {k} of {n} layers)" if k
              else f"nothing frozen (all {n} layers trained)")
    params = f"{m.get('trainable_params', 0) / 1e6:.1f}M of {m.get('total_params', 0) / 1e6:.1f}M"
    stop = "early stopping" if m.get("stopped_early") else "no early stop"
    seconds = m.get("train_seconds") or 0
    rows = [["dataset", f"{f['data']['shown']}, {f['data']['size']:,} sentences"],
            ["split", split], ["base model", f["base"]["name"]
             + (f" ([{f['base']['hub_id']}](https://huggingface.co/{f['base']['hub_id']}))"
                if f["base"]["hub_id"] and f["base"]["hub_id"] != f["base"]["name"] else "")],
            ["freezing", frozen], ["trainable parameters", params],
            ["epochs", f"{m.get('epochs_run')} run, at most {c.get('epochs', '?')} ({stop}, "
                       f"patience {c.get('patience', '?')}); best epoch {m.get('best_epoch')} "
                       "by validation macro-F1"],
            ["optimizer", f"AdamW, lr {c.get('learning_rate')}, linear warm-up "
                          f"{c.get('warmup_ratio')} and decay, weight decay "
                          f"{c.get('weight_decay')}"],
            ["batch size", c.get("batch_size")], ["max_length", f"{f['max_length']} tokens"],
            ["seed", c.get("seed") if c.get("init_seed") is None
             else f"{c.get('seed')} (split), {c.get('init_seed')} (initialisation, batch order)"],
            ["training time", f"{seconds:.0f} s ({seconds / 60:.1f} min)"]]
    levers = [f"{name} {c[key]}" for key, name, off in (
        ("label_smoothing", "label smoothing", 0.0), ("layer_decay", "layer-wise lr decay", 1.0),
        ("reinit_top", "top layers re-initialised:", 0)) if c.get(key, off) != off]
    rows.insert(-2, ["INT8-aware phase", (
        f"{c['int8_epochs']} epoch(s) at lr {c.get('int8_lr')}, distilled from the FP32 model "
        "(weights on the integer INT8 grids, activations rounded per token; validation and test "
        "scored that way)") if c.get("int8_epochs") else
        "none (a plain FP32 model, quantized by the export after training)"])
    if levers:
        rows.insert(-2, ["recipe levers", ", ".join(levers)])
    return "## Training data and recipe\n\n" + _table(["", ""], rows)


def _metrics(f: dict) -> str:
    m, ev = f["m"], f["eval"]
    if not ev:
        return "## Metrics\n\nNo evaluation recorded.\n"
    val, test = m.get("val") or {}, m.get("test") or {}
    head = _table(["split", "accuracy", "macro-F1", "sentences"],
                  [[name, f"{s['accuracy']:.3f}", f"{s['macro_f1']:.3f}", s.get("count", "")]
                   for name, s in (("validation", val), ("test", test)) if s], "lrrr")
    rows = [[label, f"{p['precision']:.3f}", f"{p['recall']:.3f}", f"{p['f1']:.3f}",
             p["support"]] for label, p in ev["per_class"].items()]
    return (f"## Metrics\n\nThe best epoch ({m.get('best_epoch')}) on the validation and test "
            f"splits of {f['data']['shown']}.\n\n{head}\n"
            f"Per class ({f['eval_split']} split):\n\n"
            + _table(["label", "precision", "recall", "F1", "support"], rows, "lrrrr")
            + f"\n### Confusion matrix ({f['eval_split']} split; rows: true, columns: "
              f"predicted)\n\n![confusion matrix]({IMAGE})\n")


def _verdicts(gates: list[dict]) -> str:
    return "\n".join(f"- {'✅' if v['passed'] else '❌'} {v['message']}" for v in gates) + "\n"


def _export_text(report: dict | None) -> str:
    if not report:
        return ("ONNX / INT8: not exported yet (`python -m core export --model <run folder>` or "
                "the Export page).\n")
    int8 = report.get("int8") or {}
    rows = []
    for art in report.get("artifacts") or []:
        s, name = art.get("metrics") or {}, ARTIFACT_NAMES.get(art["name"], art["name"])
        fmt = lambda key, spec: format(s[key], spec) if s.get(key) is not None else ""  # noqa
        rows.append([name + (" (shipped INT8)" if art["name"] == int8.get("artifact") else ""),
                     f"{art['size_mb']:.1f}", fmt("macro_f1", ".2f"),
                     fmt("macro_f1_delta", "+.2f"), fmt("agreement", ".2f"),
                     fmt("agreement_with_run", ".2f"), fmt("max_abs_diff", ".2g")])
    gates = [g for art in report.get("artifacts") or [] if art["name"] == "onnx_fp32"
             for g in art.get("gates") or []] + list(int8.get("gates") or [])
    return (f"ONNX export, checked on {report.get('eval_size')} validation sentences at "
            f"{report.get('max_length')} tokens (macro-F1 in points; agreement with ONNX FP32 and "
            "with the labels the run's own evaluation computed; the INT8 files' ΔF1 is against "
            f"{int8.get('yardstick') or 'ONNX FP32'}):\n\n"
            + _table(["artifact", "MB", "macro-F1", "ΔF1", "agreement %", "= run's labels %",
                      "max |Δlogit|"], rows, "lrrrrrr")
            + f"\n`onnx/model_quantized.onnx` is the {int8.get('method', '?')} INT8 graph: "
              f"{int8.get('reason', '')}.\n\nGates:\n\n" + _verdicts(gates))


def _bundle_text(report: dict | None) -> str:
    if not report:
        return ("Browser bundle: not built yet (`python -m core web-export --model <run folder>` "
                "or the Web bundle page).\n")
    b, s = report.get("breakdown_bytes") or {}, report.get("scores") or {}
    parts = ", ".join(f"{k} {v / 1e6:.1f}" for k, v in b.items() if v)
    whom, agree = (("the labels the run's own evaluation computed", "agreement_with_run")
                   if "agreement_with_run" in s else ("ONNX FP32", "agreement"))
    return (f"Browser bundle: {report.get('total_bytes', 0) / 1e6:.1f} MB in all (MB: {parts}). "
            f"Its model file, run by ONNX Runtime on {s.get('eval_size', '?')} sentences at "
            f"{report.get('max_length')} tokens, agrees with {whom} on "
            f"{s.get(agree, float('nan')):.2f}% of them (ΔF1 "
            f"{s.get('macro_f1_delta', float('nan')):+.2f} points). Gates:\n\n"
            + _verdicts(report.get("gates") or []))


def _limitations(f: dict, bundle_report: dict | None) -> str:
    items = [f"One label per text from a fixed set of {len(f['labels'])} "
             f"({', '.join(f['labels'])}): mixed or other emotions are forced into one of them."]
    if f["data"]["seed"]:
        items.append("The training data is the hand-written seed set (written sentence by "
                     "sentence, not sampled from real users' messages): chat, diary, "
                     "counseling-app, SNS, community and work-messenger register, 반말 and 존댓말. "
                     "News, formal documents, long texts and other domains are not represented.")
    else:
        items.append(f"The register and domain are those of {f['data']['shown']}; texts unlike "
                     "it may be classified worse.")
    items.append(f"Short texts: trained on sentences and short posts at {f['max_length']} "
                 "tokens; a longer text is truncated and only its beginning is read.")
    items.append(f"Scores come from {f['sizes'].get('test') or f['sizes'].get('val')} "
                 f"{f['eval_split']} sentences of the same set, so they carry a few points of "
                 "noise and say little about other data.")
    export = f["export"] or {}
    shipped = next((a.get("metrics") or {} for a in export.get("artifacts") or []
                    if a["name"] == (export.get("int8") or {}).get("artifact")), {})
    for where, s in (("INT8 export", shipped), ("bundle", (bundle_report or {}).get("scores"))):
        if s and s.get("agreement", 100) < 100:
            items.append(f"INT8 drift ({where}): {100 - s['agreement']:.2f}% of validation labels "
                         f"differ from FP32 (ΔF1 {s.get('macro_f1_delta', 0):+.2f} points).")
    return "## Limitations\n\n" + "\n".join(f"- {i}" for i in items) + "\n"


def _usage_run(f: dict) -> str:
    example = "내일 면접인데 잠이 안 와"
    return ("## How to use\n\n```python\nfrom transformers import pipeline\n\n"
            "clf = pipeline(\"text-classification\", model=\"path/to/this/folder\")  "
            "# or the Hub repo id\n"
            f"clf(\"{example}\", top_k=None, truncation=True, max_length={f['max_length']})\n"
            "```\n\nFrom the studio: `python -m core predict --model <run folder> --text "
            f"\"{example}\"`; `python -m core export` adds ONNX/INT8 files and `python -m core "
            "web-export` a browser bundle.\n")


def _body(f: dict, bundle_report: dict | None, bundle: bool) -> str:
    what = "browser bundle, INT8, onnxruntime-web" if bundle else "model"
    title = (f"# Korean emotion classifier: {f['name']} ({what})\n\n"
             f"{f['base']['name']} fine-tuned to classify Korean text into {len(f['labels'])} "
             f"emotions: {', '.join(f['labels'])}.\n")
    parity = ("## INT8 and browser parity\n\n" + _export_text(f["export"]) + "\n"
              + _bundle_text(bundle_report))
    return "\n".join([title, INTENDED.format(n=len(f["labels"])), _labels(f), _training(f),
                      _metrics(f), parity, _limitations(f, bundle_report),
                      USAGE_BUNDLE if bundle else _usage_run(f)])


# --- the confusion matrix ------------------------------------------------------------------------
def confusion_svg(labels: list[str], matrix: list[list[int]], title: str) -> str:
    """A grid of counts shaded by each true label's share (rows: true, columns: predicted)."""
    cell, font, n = 52, 13, len(labels)
    widest = max([sum(font if ord(ch) > 0x1000 else font * 0.6 for ch in lab) for lab in labels]
                 + [20])  # Hangul is about 1 em wide, Latin about 0.6
    rotate = widest > cell - 6
    left, top = round(widest) + 36, round(widest * 0.75 if rotate else font) + 56
    width = left + cell * n + 10 + (round(widest * 0.75) if rotate else 0)
    height, mid, centre = top + cell * n + 36, font // 3, top + cell * n // 2
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="\'Noto Sans KR\', \'Nanum '
           f'Gothic\', \'Malgun Gothic\', sans-serif" font-size="{font}">',
           f"<title>{escape(title)}</title>", '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{left}" y="20" font-size="15" font-weight="bold">{escape(title)}</text>',
           f'<text x="{left + cell * n // 2}" y="40" text-anchor="middle">predicted</text>',
           f'<text x="14" y="{centre}" text-anchor="middle" '
           f'transform="rotate(-90 14 {centre})">true</text>']
    for i, lab in enumerate(labels):
        x, y = left + cell * i + cell // 2, top + cell * i + cell // 2
        out.append(f'<text x="{left - 8}" y="{y + mid}" text-anchor="end">{escape(lab)}</text>')
        out.append(f'<text x="{x}" y="{top - 8}" text-anchor="{"start" if rotate else "middle"}"'
                   + (f' transform="rotate(-45 {x} {top - 8})"' if rotate else "")
                   + f">{escape(lab)}</text>")
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, count in enumerate(row):
            share = count / total
            shade = tuple(round(255 - share * (255 - c)) for c in (31, 78, 154))
            x, y = left + cell * j, top + cell * i
            out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" '
                       f'fill="rgb{shade}" stroke="#ccc"/>')
            out.append(f'<text x="{x + cell // 2}" y="{y + cell // 2 + mid}" text-anchor='
                       f'"middle" fill="{"white" if share > 0.5 else "black"}">{count}</text>')
    return "\n".join(out + ["</svg>"]) + "\n"


def confusion_image(run: RunFolder, f: dict | None = None) -> str | None:
    """The SVG of the run's confusion matrix (test split, else validation), or None."""
    f = f or facts(run)
    ev = f["eval"]
    return confusion_svg(ev.get("labels") or f["labels"], ev["confusion_matrix"],
                         f"Confusion matrix, {f['eval_split']} split ({ev.get('count')})") \
        if ev.get("confusion_matrix") else None


def _write_image(run: RunFolder, f: dict, folder: Path) -> None:
    svg = confusion_image(run, f)
    if svg:
        paths.atomic_write_text(folder / IMAGE, svg)


# --- the cards -----------------------------------------------------------------------------------
def run_card(run: RunFolder, f: dict | None = None) -> str:
    """The model card of ``run``'s model/ folder (markdown with YAML front matter)."""
    f = f or facts(run)
    return front_matter(metadata(f)) + "\n" + _body(f, run.bundle_report(), bundle=False)


def write_run_card(run: RunFolder) -> Path:
    """Write RUN/model/README.md and the confusion matrix beside it; returns the card's path."""
    f = facts(run)
    _write_image(run, f, run.model_dir)
    return paths.atomic_write_text(run.model_dir / CARD, run_card(run, f))


def refresh_run_card(run: RunFolder, changed: str | Path) -> None:
    """After an export or a bundle was written to ``changed``: when that is the run's own
    folder, rewrite the card so its INT8 and browser sections describe what is there now."""
    own = (run.root.resolve(), run.bundle_dir.resolve())
    if Path(changed).resolve() in own and run.is_trained():
        write_run_card(run)


def _bundle_parts(run: RunFolder, bundle_dir, report: dict | None) -> tuple[dict, str, dict]:
    f = facts(run)
    report = report if report is not None else run.bundle_report(bundle_dir)
    f["max_length"] = (report or {}).get("max_length") or f["max_length"]
    return metadata(f, bundle=True), _body(f, report, bundle=True), f


def bundle_card(run: RunFolder, bundle_dir: str | Path, report: dict | None = None) -> str:
    """The card of a bundle built from ``run`` (``report``: its bundle_report, else read)."""
    meta, body, _ = _bundle_parts(run, bundle_dir, report)
    return front_matter(meta) + "\n" + body


def split_front_matter(text: str) -> tuple[str, str]:
    """(YAML between the leading ``---`` lines, the rest); ("", text) when there is none."""
    found = re.match(r"---\n(.*?\n)---\n", text, re.S)
    return (found.group(1), text[found.end():]) if found else ("", text)


def _demote(markdown: str) -> str:
    """Every heading two levels down (outside code fences): the template's title sits under
    the card's "Hosting and usage" section."""
    out, fenced = [], False
    for line in markdown.splitlines():
        fenced ^= line.lstrip().startswith("```")
        out.append("##" + line if not fenced and re.match(r"#{1,4} ", line) else line)
    return "\n".join(out) + "\n"


def write_bundle_card(run: RunFolder, bundle_dir: str | Path, template_readme: str,
                      report: dict | None = None) -> Path:
    """BUNDLE/README.md: one front matter (the template's Space settings, then the card's keys
    it does not set), the card, then the template's text under its own heading."""
    bundle_dir = Path(bundle_dir)
    meta, body, f = _bundle_parts(run, bundle_dir, report)
    header, rest = split_front_matter(template_readme)
    taken = set(re.findall(r"^([\w-]+):", header, re.M))
    meta = {k: v for k, v in meta.items() if k not in taken}
    card = ("---\n" + header + "\n".join(yaml_lines(meta)) + "\n---\n\n" + body
            + "\n## Hosting and usage\n\n" + _demote(rest.strip()))
    _write_image(run, f, bundle_dir)
    return paths.atomic_write_text(bundle_dir / CARD, card)


def page_parts(card: str) -> tuple[str, str]:
    """The card for ``st.markdown`` without its front matter, split where the image goes (show
    it between the two with ``st.image``)."""
    body = split_front_matter(card)[1]
    before, _, after = body.partition(f"![confusion matrix]({IMAGE})\n")
    return before, after


def page_blocks(folder: str | Path, missing: str) -> list[tuple[str, str]]:
    """What a page shows of the card in ``folder`` (a run's model/, a bundle), as (kind, value)
    for ``getattr(st, kind)(value)``: markdown, the confusion matrix image (a path), markdown;
    [("info", missing)] when its README.md is absent or not a card (e.g. a bundle's template)."""
    folder = Path(folder)
    try:
        card = (folder / CARD).read_text(encoding="utf-8")
    except OSError:
        card = ""
    if not re.search(r"^pipeline_tag:", split_front_matter(card)[0], re.M):
        return [("info", missing)]
    before, after = page_parts(card)
    image = [("image", str(folder / IMAGE))] if (folder / IMAGE).is_file() else []
    return [("markdown", before), *image, ("markdown", after)]
