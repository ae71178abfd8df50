"""How far from the best possible are the models on a generated data set? The generator knows what no data
shows: each user's taste and each item's latent vector. This ranks the temporal holdout (the evaluation's own
split and protocol: `temporal_split`, full ranking, seen items excluded) three ways:

* EASE, the platform's, its l2 the best on the holdout itself (generous to it);
* perfect item vectors: the generator's own score, the user's taste taken as the mean of the true latent vectors
  of the items they took in training (what a perfect item embedding gives a model that learns the user from
  their history);
* true taste: the generator's own score with the user's hidden taste on the split day: the ceiling.

Prints each against EASE (the quality target is 1.1x EASE); writes bench/results/ceiling.json.

    python bench/ceiling.py [--datasets static,default,extreme]
"""

import argparse

import numpy as np
import pandas as pd
from common import write_result
from quality import DATASETS  # first: common sets the partitions' start date

from recsys_assets.data.generator import generate, true_choice_scores
from recsys_assets.data.schema import day_start_ms
from recsys_assets.models.baselines import fit_ease, interaction_matrix, protocol
from recsys_assets.models.data import DAY_MS, ITEM, TIME, USER, Vocabulary, temporal_split

EASE_L2 = (50.0, 200.0, 500.0, 1000.0, 3000.0)


def ceiling(name: str) -> dict:
    cfg = DATASETS[name]
    _, days = generate(cfg)
    events = pd.concat([table.select([USER, ITEM, TIME]).to_pandas() for _, table in days], ignore_index=True)
    split = temporal_split(events, 0.2)
    users = sorted(set(split.holdout[USER]))
    user_vocab, items = Vocabulary(split.train[USER]), Vocabulary(split.train[ITEM])
    judged = protocol(split.train, split.holdout, users, user_vocab, items)
    x = interaction_matrix(split.train, user_vocab, items)
    ease = {l2: judged.report(fit_ease(x, l2, max_items=len(items))) for l2 in EASE_L2}
    best_l2 = max(ease, key=lambda l2: ease[l2]["ndcg@10"])

    day = (split.boundary_timestamp - day_start_ms(cfg.start)) // DAY_MS

    def generator_scores(history_taste=None) -> np.ndarray:
        scores = np.full((len(users), len(items)), -np.inf, dtype=np.float32)  # column 0: padding
        scores[:, 1:] = true_choice_scores(cfg, users, items.ids, int(day), history_taste)
        return scores

    results = {
        "ease": {**ease[best_l2], "l2": best_l2},
        "perfect_item_vectors": judged.report_scores(generator_scores(judged.history[:, 1:].toarray())),
        "true_taste": judged.report_scores(generator_scores()),
    }
    results = {model: {k: round(v, 4) for k, v in metrics.items()} for model, metrics in results.items()}
    return {"split_day": int(day), "holdout_users": len(users), "holdout": results,
            "vs_ease": {model: round(metrics["ndcg@10"] / results["ease"]["ndcg@10"], 3)
                        for model, metrics in results.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="static,default,extreme", help=f"comma-separated among {list(DATASETS)}")
    names = parser.parse_args().datasets.split(",")
    results = {name: ceiling(name) for name in names}
    write_result("ceiling", results)
    for name, result in results.items():
        ndcg = {model: metrics["ndcg@10"] for model, metrics in result["holdout"].items()}
        print(f"{name}: holdout NDCG@10 EASE {ndcg['ease']:.4f}, perfect item vectors {ndcg['perfect_item_vectors']:.4f}"
              f" ({result['vs_ease']['perfect_item_vectors']}x EASE), true taste {ndcg['true_taste']:.4f} "
              f"({result['vs_ease']['true_taste']}x EASE: the ceiling; the target is 1.1x)")


if __name__ == "__main__":
    main()
