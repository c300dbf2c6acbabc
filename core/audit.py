"""Dataset audit: likely label errors (confident learning) and near-duplicates across splits.

Label errors: every text is embedded once with a frozen encoder (the bundled e5-small-ko, e5's
``"query: "`` prefix; the mean-pooled hidden states of a few layers, concatenated: a better probe
than the last layer alone, see ``AuditConfig.layers``); a logistic regression gives out-of-fold
probabilities by stratified k-fold (scikit-learn), and cleanlab's
``filter.find_label_issues`` flags the rows whose given label the held-out model doubts most
(Northcutt et al., "Confident Learning", JAIR 2021). Each flagged row comes with the model's label
(the suggestion), its probability and cleanlab's label-quality score (the given label's
probability), ranked worst first.

Leakage: pairs of near-duplicate texts that fall in different splits of the dataset's split
(``data.split_records`` with the split saved with the dataset, or the defaults): cosine of the
L2-normalised mean-pooled last hidden states (the e5 sentence embedding) at or above
``cosine_threshold``, or character-3-gram Jaccard (core/generate/dedup's
grams: NFKC, case-folded, spaces and punctuation removed) at or above ``jaccard_threshold``.

Embeddings are cached per model and text content under ``workspace/cache/embeddings``, so a
rerun (or an audit after relabelling: labels are not part of the key) skips the encoder.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core import data, paths
from core.data import SPLIT_SEED
from core.errors import ConfigError, ModelError
from core.models.registry import BUNDLED_DEFAULT
from core.progress import ProgressFn

log = logging.getLogger(__name__)

ACTIONS = ("keep", "relabel", "drop")  # what a reviewer may do with a flagged row
EMBED_FORMAT = 2  # bump when the pooling or normalisation changes: cached embeddings are rebuilt


@dataclass(frozen=True)
class AuditConfig:
    data: str | None = None  # dataset file or saved dataset name; None = the shipped seed set
    base: str = BUNDLED_DEFAULT  # encoder for the embeddings: bundled name, hub id or folder
    folds: int = 5  # stratified k-fold: each row's probabilities come from a model not fit on it
    top: int = 50  # flagged rows to list, worst first (0 = every flagged row)
    # The probe's features: the mean-pooled hidden states of these layers, concatenated (0 = the
    # embedding layer, N = the last; negative counts from the end). Measured on the seed set
    # (4,328 rows, 5 folds, out-of-fold accuracy / log-loss): last layer only (-1,) 0.737 / 0.735;
    # (4, 8, 12) 0.787 / 0.589; (3, 6, 9, 12) 0.795 / 0.579; (2, 4, ..., 12) 0.800 / 0.566.
    # Near-duplicates always use the last layer (the e5 sentence embedding).
    layers: tuple[int, ...] = (3, 6, 9, 12)
    # Inverse L2 strength of the logistic regression on standardised features (seed set, layers
    # (3, 6, 9, 12): C=0.01 0.795 / 0.579, 0.005 0.791 / 0.582, 0.002 0.784 / 0.621).
    c: float = 0.01
    prefix: str = "query: "  # e5's input prefix (out-of-fold accuracy 0.740 with, 0.736 without)
    max_length: int = 64  # tokens per text, truncated (the seed texts are 1-91 characters)
    batch_size: int = 64  # texts per encoder forward pass (sorted by length: little padding)
    cosine_threshold: float = 0.95  # embedding cosine at or above which two texts are near-dups
    jaccard_threshold: float = 0.6  # char-3-gram Jaccard at or above which they are near-dups
    seed: int = SPLIT_SEED  # fold assignment
    # The split checked for leakage (data.split_records); None = the split saved with the
    # dataset (data.saved_split_params), else data's defaults.
    val_frac: float | None = None  # validation share; give it with test_frac
    test_frac: float | None = None  # test share; give it with val_frac
    split_seed: int | None = None  # the split's seed; None = the saved one or data.SPLIT_SEED
    use_cache: bool = True  # reuse cached embeddings of the same texts and encoder
    num_threads: int = 0  # torch CPU threads; 0 = torch's default (one per core)

    def __post_init__(self):
        checks = [
            (self.folds >= 2, "folds must be >= 2 (e.g. 5)"),
            (self.top >= 0, "top must be >= 0 (0 lists every flagged row)"),
            (self.c > 0, "c (inverse regularisation strength) must be > 0, e.g. 0.01"),
            (len(self.layers) >= 1 and all(isinstance(x, int) for x in self.layers),
             "layers must list at least one hidden-state index, e.g. (3, 6, 9, 12) or (-1,)"),
            (8 <= self.max_length <= 512, "max_length must be between 8 and 512 tokens"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (0 < self.cosine_threshold <= 1, "cosine_threshold must be in (0, 1], e.g. 0.95"),
            (0 < self.jaccard_threshold <= 1, "jaccard_threshold must be in (0, 1], e.g. 0.6"),
            (self.num_threads >= 0, "num_threads must be >= 0 (0 = torch's default)"),
            (bool(str(self.base).strip()), f"base must name a model, e.g. {BUNDLED_DEFAULT}"),
            ((self.val_frac is None) == (self.test_frac is None),
             "give both val_frac and test_frac, or neither (the dataset's own split)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"audit: {message}")
        if self.val_frac is not None:
            data.split_records([], self.val_frac, self.test_frac)  # checks the fractions


@dataclass(frozen=True)
class LabelIssue:
    index: int  # position in the audited record list
    line: int  # 1-based line in the source file (0 when built in code)
    text: str
    label: str  # the given label
    suggested: str  # the out-of-fold model's label
    confidence: float  # the model's probability of ``suggested``
    quality: float  # cleanlab label-quality score: the model's probability of the given label


@dataclass(frozen=True)
class LeakPair:
    a: int  # positions in the audited record list (a < b)
    b: int
    line_a: int
    line_b: int
    split_a: str  # "train" | "val" | "test"
    split_b: str
    text_a: str
    text_b: str
    label_a: str
    label_b: str
    cosine: float
    jaccard: float


@dataclass
class AuditResult:
    source: str  # the dataset audited
    count: int  # records audited
    labels: list[str]
    flagged: int  # rows cleanlab flags as likely mislabeled (``issues`` holds the top of them)
    issues: list[LabelIssue]
    leaks: list[LeakPair]  # near-duplicate pairs in different splits, most similar first
    split: dict  # {"val_frac", "test_frac", "seed", "source", "sizes"}
    oof_accuracy: float  # out-of-fold accuracy of the probe against the given labels
    embed_seconds: float
    cached: bool  # the embeddings came from the cache
    seconds: float
    config: dict = field(default_factory=dict)


def _emit(on_progress: ProgressFn | None, done: int, total: int, message: str) -> None:
    if on_progress:
        on_progress({"done": done, "total": total, "message": message})


def _model_key(location: str) -> str:
    """What identifies the encoder's weights: the bundled build's manifest, a folder's files'
    modification times, or the hub id."""
    folder = Path(location)
    if not folder.is_dir():
        return location
    manifest = folder / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text(encoding="utf-8"))
        return json.dumps([m.get("source_sha256"), m.get("format_version"), m.get("options")],
                          sort_keys=True)
    stamps = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()
                    if p.is_file())
    return json.dumps([str(folder.resolve()), stamps])


def _cache_path(location: str, config: AuditConfig, texts: list[str]) -> Path:
    digest = hashlib.sha256()
    digest.update(json.dumps([EMBED_FORMAT, _model_key(location), config.prefix,
                              config.max_length, list(config.layers)]).encode("utf-8"))
    for text in texts:
        digest.update(b"\0" + text.encode("utf-8", "surrogatepass"))
    return paths.sub("cache") / "embeddings" / f"{digest.hexdigest()}.npy"


def _load_encoder(location: str):
    from transformers import AutoModel, AutoTokenizer

    from core.models.registry import quiet_transformers

    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(location), AutoModel.from_pretrained(location)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"audit: could not load the encoder {location!r}: {exc}; use "
                         f"{BUNDLED_DEFAULT!r} (works offline) or a local model folder") from exc


def _encode(location: str, texts: list[str], config: AuditConfig,
            on_progress: ProgressFn | None) -> np.ndarray:
    """[len(layers) + 1, n, hidden]: each of ``config.layers``' mean-pooled hidden states, then
    the last layer's; in batches of similar length."""
    import torch

    tokenizer, model = _load_encoder(location)
    model.eval()
    count = model.config.num_hidden_layers + 1  # hidden_states: embeddings + every layer
    if any(not -count <= x < count for x in config.layers):
        raise ConfigError(f"audit: layers {config.layers} out of range for {config.base} "
                          f"({count - 1} layers: use 0..{count - 1} or negative indices)")
    picks = [*config.layers, -1]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(picks), len(texts), model.config.hidden_size), dtype=np.float32)
    before = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    try:
        with torch.inference_mode():
            for start in range(0, len(order), config.batch_size):
                idx = order[start:start + config.batch_size]
                enc = tokenizer([config.prefix + texts[i] for i in idx], padding=True,
                                truncation=True, max_length=config.max_length,
                                return_tensors="pt")
                states = model(**enc, output_hidden_states=True).hidden_states
                mask = enc["attention_mask"].unsqueeze(-1).float()
                for k, layer in enumerate(picks):
                    pooled = (states[layer] * mask).sum(1) / mask.sum(1).clamp(min=1)
                    out[k, idx] = pooled.numpy()
                _emit(on_progress, start + len(idx), len(texts), "embedding texts")
    finally:
        torch.set_num_threads(before)
    return out


def embed(texts: list[str], config: AuditConfig, on_progress: ProgressFn | None = None
          ) -> tuple[np.ndarray, np.ndarray, bool]:
    """(probe features [n, len(layers) * hidden], L2-normalised last-layer sentence embeddings
    [n, hidden], whether they came from the cache) for ``texts``."""
    from core.models.registry import resolve_base

    location = resolve_base(config.base, on_progress=on_progress)
    cache = _cache_path(location, config, texts)
    pooled, cached = None, False
    if config.use_cache and cache.is_file():
        try:
            pooled = np.load(cache)
            cached = pooled.shape[:2] == (len(config.layers) + 1, len(texts))
        except (OSError, ValueError):
            log.warning("ignoring an unreadable embedding cache %s", cache)
    if cached:
        _emit(on_progress, len(texts), len(texts), "embeddings from the cache")
    else:
        # float16 halves the cache (seed set: 17 MB instead of 33 MB); fresh and cached runs both
        # use the rounded values, so they give the same result.
        pooled = _encode(location, texts, config, on_progress).astype(np.float16)
        buf = io.BytesIO()
        np.save(buf, pooled)
        paths.atomic_write_bytes(cache, buf.getvalue())
    pooled = pooled.astype(np.float32)
    features = np.concatenate(list(pooled[:-1]), axis=1)
    last = pooled[-1] / np.maximum(np.linalg.norm(pooled[-1], axis=1, keepdims=True), 1e-12)
    return features, last, cached


def out_of_fold_probs(features: np.ndarray, y: np.ndarray, config: AuditConfig) -> np.ndarray:
    """[n, k] probabilities, each row from a logistic regression that never saw it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=config.c, max_iter=2000))
    folds = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    return cross_val_predict(probe, features, y, cv=folds, method="predict_proba")


def label_issues(records: list[data.Record], labels: list[str], probs: np.ndarray,
                 top: int = 0) -> tuple[int, list[LabelIssue]]:
    """(how many rows cleanlab flags, the first ``top`` of them worst first; 0 = all)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    y = np.array([labels.index(r.label) for r in records])
    ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(y, probs, method="self_confidence")
    shown = ranked if top == 0 else ranked[:top]
    issues = []
    for i in map(int, shown):
        best = int(np.argmax(probs[i]))
        issues.append(LabelIssue(i, records[i].line, records[i].text, records[i].label,
                                 labels[best], round(float(probs[i, best]), 4),
                                 round(float(quality[i]), 4)))
    return len(ranked), issues


def _gram_matrix(texts: list[str]):
    """Binary [n, grams] matrix of dedup's character 3-grams, and each row's gram count."""
    from scipy.sparse import csr_matrix

    from core.generate.dedup import _gram_set  # the same grams the generator deduplicates on

    columns: dict[int, int] = {}
    indptr, indices = [0], []
    for text in texts:
        indices += [columns.setdefault(g, len(columns)) for g in _gram_set(text, 3)]
        indptr.append(len(indices))
    matrix = csr_matrix((np.ones(len(indices), np.float32), indices, indptr),
                        shape=(len(texts), max(len(columns), 1)))
    return matrix, np.diff(indptr).astype(np.float32)


def near_duplicate_pairs(texts: list[str], vectors: np.ndarray, groups: list[str],
                         cosine_threshold: float, jaccard_threshold: float,
                         block: int = 512) -> list[tuple[int, int, float, float]]:
    """(i, j, cosine, jaccard) for i < j in different ``groups`` that are near-duplicates by
    either measure; blocks of rows keep memory at ``block`` x n."""
    grams, sizes = _gram_matrix(texts)
    group_ids = np.unique(np.array(groups), return_inverse=True)[1]
    found = []
    for start in range(0, len(texts), block):
        rows = slice(start, min(start + block, len(texts)))
        cos = vectors[rows] @ vectors.T
        inter = (grams[rows] @ grams.T).toarray()
        union = sizes[rows, None] + sizes[None, :] - inter
        jac = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        i_idx = np.arange(rows.start, rows.stop)[:, None]
        hit = ((cos >= cosine_threshold) | (jac >= jaccard_threshold))
        hit &= np.arange(len(texts))[None, :] > i_idx
        hit &= group_ids[rows, None] != group_ids[None, :]
        for r, j in zip(*np.nonzero(hit)):
            found.append((int(rows.start + r), int(j), float(cos[r, j]), float(jac[r, j])))
    return sorted(found, key=lambda p: (-max(p[2], p[3]), p[0], p[1]))


def _split_params(config: AuditConfig, source) -> dict:
    """The split to check for leakage: the config's, the dataset's saved one, or the defaults."""
    if config.val_frac is not None:
        return {"val_frac": config.val_frac, "test_frac": config.test_frac,
                "seed": data.SPLIT_SEED if config.split_seed is None else config.split_seed,
                "source": "config"}
    saved = data.saved_split_params(source) if source is not None else None
    how = saved or {"val_frac": data.VAL_FRAC, "test_frac": data.TEST_FRAC,
                    "seed": data.SPLIT_SEED}
    if config.split_seed is not None:
        how = {**how, "seed": config.split_seed}
    return {**how, "source": "saved with the dataset" if saved else "defaults"}


def _split_names(records: list[data.Record], how: dict) -> tuple[list[str], dict]:
    split = data.split_records(records, how["val_frac"], how["test_frac"], how["seed"])
    where = {}
    for part in ("train", "val", "test"):
        for record in getattr(split, part):
            where[id(record)] = part
    return [where[id(r)] for r in records], split.sizes()


def _check_counts(records: list[data.Record], labels: list[str], folds: int) -> None:
    if len(labels) < 2:
        raise ConfigError("audit: the dataset has one label; label errors need at least two")
    counts = {label: sum(r.label == label for r in records) for label in labels}
    short = {label: n for label, n in counts.items() if n < folds}
    if short:
        listed = ", ".join(f"{label} {n}" for label, n in short.items())
        raise ConfigError(f"audit: every label needs at least folds={folds} records for "
                          f"stratified {folds}-fold probabilities ({listed}); add records or "
                          "lower folds")


def audit_records(records: list[data.Record], config: AuditConfig,
                  split: dict | None = None, on_progress: ProgressFn | None = None,
                  source: str = "<records>") -> AuditResult:
    """Audit ``records`` (e.g. the Dataset page's current rows). ``split`` ({"val_frac",
    "test_frac", "seed"}) is the split checked for leakage; None = ``config``'s rule."""
    started = time.perf_counter()
    labels = sorted({r.label for r in records})
    _check_counts(records, labels, config.folds)
    how = {"source": "given", **split} if split is not None else _split_params(config, None)
    groups, sizes = _split_names(records, how)
    texts = [r.text for r in records]
    t0 = time.perf_counter()
    features, vectors, cached = embed(texts, config, on_progress)
    embed_seconds = time.perf_counter() - t0
    _emit(on_progress, 0, 3, "out-of-fold probabilities")
    y = np.array([labels.index(r.label) for r in records])
    probs = out_of_fold_probs(features, y, config)
    _emit(on_progress, 1, 3, "ranking label issues (cleanlab)")
    flagged, issues = label_issues(records, labels, probs, config.top)
    _emit(on_progress, 2, 3, "near-duplicates across splits")
    pairs = near_duplicate_pairs(texts, vectors, groups, config.cosine_threshold,
                                 config.jaccard_threshold)
    leaks = [LeakPair(i, j, records[i].line, records[j].line, groups[i], groups[j],
                      records[i].text, records[j].text, records[i].label, records[j].label,
                      round(c, 4), round(jac, 4)) for i, j, c, jac in pairs]
    _emit(on_progress, 3, 3, "done")
    return AuditResult(
        source=source, count=len(records), labels=labels, flagged=flagged, issues=issues,
        leaks=leaks, split={**how, "sizes": sizes},
        oof_accuracy=round(float((probs.argmax(1) == y).mean()), 4),
        embed_seconds=round(embed_seconds, 2), cached=cached,
        seconds=round(time.perf_counter() - started, 2), config=asdict(config))


def run(config: AuditConfig, on_progress: ProgressFn | None = None) -> AuditResult:
    """Audit a dataset file or saved dataset (its valid, deduplicated records)."""
    path = data.resolve_dataset(config.data)
    records = data.load_dataset(path)
    return audit_records(records, config, _split_params(config, path), on_progress,
                         source=str(path))


def records_key(records: list[data.Record], split: dict | None = None) -> str:
    """A short digest of records (text, label, line) and a split: a page keeps an audit result
    only while the rows it audited are still the rows on screen."""
    digest = hashlib.sha256(json.dumps(split, sort_keys=True).encode("utf-8"))
    for r in records:
        digest.update(json.dumps([r.text, r.label, r.line], ensure_ascii=True).encode("ascii"))
    return digest.hexdigest()[:16]


def apply_actions(records: list[data.Record], decisions: dict[int, tuple[str, str | None]]
                  ) -> tuple[list[data.Record], dict]:
    """Records after a review: ``decisions`` maps a position to ("keep" | "relabel" | "drop",
    new label). Returns (the records, {"relabelled": n, "dropped": n}); the rest is unchanged."""
    out, counts = [], {"relabelled": 0, "dropped": 0}
    for index, (action, label) in decisions.items():
        if action not in ACTIONS:
            raise ConfigError(f"audit: unknown action {action!r} for row {index}; use "
                              + ", ".join(ACTIONS))
        if action == "relabel" and not (label and str(label).strip()):
            raise ConfigError(f"audit: row {index} is to be relabelled but has no new label")
    for index, record in enumerate(records):
        action, label = decisions.get(index, ("keep", None))
        if action == "drop":
            counts["dropped"] += 1
            continue
        if action == "relabel" and label != record.label:
            record = data.Record(record.text, str(label).strip(), dict(record.meta), record.line)
            counts["relabelled"] += 1
        out.append(record)
    return out, counts
