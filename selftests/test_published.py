"""published.csv: the paper's pooled statistics, computed as published."""

import math

from miqa_checks.published import published_table


def _row(condition, prompt, score, image="a"):
    return {"model": "m", "dataset": "d", "image_id": image, "condition": condition, "prompt_id": prompt, "score": score}


def test_pools_severities_and_leaves_out_unparsed_answers():
    rows = [_row("clean", "base", 4.0, "a"), _row("clean", "base", 2.0, "b")]
    rows += [_row(f"pixelation-{s}", "base", 2.4, "a") for s in range(1, 6)]
    rows += [_row("pixelation-1", "base", float("nan"), "b"), _row("pixelation-2", "base", "", "b")]
    rows += [_row("clean", "institution-world_class", 3.45, "a"), _row("clean", "paraphrase-1", 1.0, "a")]
    table = {(r["kind"], r["name"]): r for r in published_table(rows)}
    assert set(table) == {("corruption", "pixelation"), ("attribute", "institution-world_class")}
    pix = table[("corruption", "pixelation")]
    assert (pix["n_ref"], pix["n_cond"]) == (2, 5)
    assert math.isclose(pix["delta_pct"], (2.4 - 3.0) / 3.0 * 100)
    assert pix["published_delta_pct"] == -20.58
    attr = table[("attribute", "institution-world_class")]
    assert math.isclose(attr["delta_pct"], 15.0) and attr["published_delta_pct"] == 17.15


def test_no_clean_reference_gives_nan():
    table = published_table([_row("pixelation-1", "base", 3.0)])
    assert len(table) == 1 and math.isnan(table[0]["delta_pct"])
