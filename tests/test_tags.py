"""Item tags with the real MiniLM weights: vocabulary, 5 tags, re-tagging only changed texts, embeddings."""

import numpy as np
import pandas as pd

from recsys_assets.models.tags import (
    EmbeddingTagger,
    encode,
    select_tagger,
    tag_embeddings,
    tag_items,
    tag_vocabulary,
)

ITEMS = pd.DataFrame({
    "parent_asin": ["B1", "B2", "B3"],
    "title": ["Dragons of the North", "The Quantum Garden", "Murder at the Manor"],
    "description": ["An epic fantasy of dragons and sorcery.", "Hard science fiction about quantum physics.",
                    "A classic whodunit mystery in an English country house."],
    "features": [["fantasy"], ["space"], ["detective"]],
    "categories": [["Books", "Fantasy", "Dragons"], ["Books", "Science Fiction", "Physics"],
                   ["Books", "Mystery", "Detectives"]],
    "main_category": "Books",
})


def test_vocabulary_leaves_out_categories_on_most_items():
    vocabulary = tag_vocabulary(ITEMS)
    assert "Books" not in vocabulary and {"Fantasy", "Mystery", "Dragons"} <= set(vocabulary)


def test_tags_follow_the_text_and_only_changed_items_are_tagged_again():
    tagger = EmbeddingTagger(tag_vocabulary(ITEMS))
    first, tagged = tag_items(ITEMS, None, tagger)
    assert tagged == 3 and all(len(t) == 5 for t in first.tags)
    by_item = dict(zip(first.parent_asin, first.tags))
    assert "Dragons" in by_item["B1"][:2] and "Mystery" in by_item["B3"][:3]

    changed = ITEMS.copy()
    changed.loc[1, "description"] = "A detective mystery set on a space station."
    second, tagged = tag_items(changed, first, tagger)
    assert tagged == 1
    assert dict(zip(second.parent_asin, second.tags))["B1"] == by_item["B1"]
    assert second.text_hash[1] != first.text_hash[1]


def test_tag_embedding_is_the_mean_of_its_tags_vectors():
    tags = pd.DataFrame({"parent_asin": ["B1", "B2"], "tags": [["Fantasy", "Dragons"], []]})
    embeddings = tag_embeddings(tags)
    assert embeddings.tag_embedding[0].shape == (384,)
    np.testing.assert_allclose(embeddings.tag_embedding[0], encode(["Fantasy", "Dragons"]).mean(axis=0), rtol=1e-4, atol=1e-6)
    assert not embeddings.tag_embedding[1].any()  # no tags: zeros


def test_llm_tagger_is_selected_only_with_a_model_folder(tmp_path):
    assert select_tagger(ITEMS, None).name == "minilm"
    assert select_tagger(ITEMS, str(tmp_path / "missing")).name == "minilm"
