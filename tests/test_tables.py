"""Paper tables: every reported number rendered, best/second marks, '-' cells, the tiny mark, mapping
of runs to rows, and the reported files checked against the paper texts they were typed from."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from unifybench import tables
from unifybench.cli import main as cli_main
from unifybench.resultsfile import load_results
from shared_data import require_papers


def write_results(folder: Path, method: str, preset: str, metrics: dict, tiny: bool = False,
                  benchmark: str = "unifybench") -> Path:
    """A results.json by hand: metrics = {evaluator: (value, evaluator preset[, {task: value}])}."""
    def result(v, p, by_task=None):
        r = {"value": v, "n": 10, "n_failed": 0, "per_concept": {"bo": v, "mam": v}, "preset": p}
        if by_task:
            r["by_task"] = {t: {"value": tv, "n": 5, "n_failed": 0, "per_concept": {"bo": tv, "mam": tv}}
                            for t, tv in by_task.items()}
        return r
    results = {ev: result(*spec) for ev, spec in metrics.items()}
    doc = {"schema_version": 1, "tiny": tiny,
           "config": {"method": {"name": method, "preset": preset, "config": {}}, "benchmark": benchmark,
                      "seed": 0, "concepts": ["bo", "mam"]},
           "results": {benchmark: results}}
    if tiny:
        doc["notice"] = "RANDOM TINY MODELS"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(doc))
    return folder / "results.json"


def md_rows(text: str) -> dict[str, list[str]]:
    """Method label -> cells after the label, marks stripped."""
    out = {}
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        cells = [re.sub(r"\*\*|</?u>", "", c) for c in cells]
        out.setdefault(cells[1] if len(cells) > 1 else cells[0], cells)
    return out


# ---------------------------------------------------------------------------------- data files

def test_every_spec_and_reported_file_loads_and_agrees():
    names = tables.spec_names()
    assert {"unictokens_table1", "unictokens_table2_understanding", "unictokens_table2_generation",
            "unictokens_table3_stages", "unictokens_table3_init", "unictokens_appendix_f_token_length",
            "yochameleon_supp_table1"} <= set(names)
    for name in names:
        spec = tables.load_spec(name)
        rep = spec.reported
        assert rep is not None, name
        assert [r.id for r in spec.rows] == list(rep.rows), f"{name}: spec rows must list every reported row in order"
        assert [c.id for c in spec.columns if c.in_paper] == list(rep.columns), f"{name}: a column per reported column"
        for r in rep.rows.values():
            assert set(r["values"]) == set(rep.columns), f"{name}/{r['id']}: a value for every column"
            assert rep.source_of(r["id"], next(iter(rep.columns))).startswith(rep.source["paper"])


def test_spec_rows_and_columns_name_what_the_registry_has():
    """A row matches runs only if its method and preset exist: a typo would silently leave the row empty."""
    from unifybench.registry import EVALUATORS, get_runnable
    for name in tables.spec_names():
        spec = tables.load_spec(name)
        for col in spec.columns:
            if col.kind == "metric":
                cls = EVALUATORS.get(col.evaluator)   # raises on an unknown name
                for preset in col.preset or []:
                    assert preset in cls.presets, f"{name}/{col.id}: {col.evaluator} has no preset {preset!r}"
        for row in spec.rows:
            for m in row.match:
                cls = get_runnable(m["method"])
                if m.get("preset") is not None:
                    assert m["preset"] == "paper" or m["preset"] in cls.presets, f"{name}/{row.id}: {m}"


def test_forgetting_columns_read_the_forgetting_report(tmp_path):
    def forgetting(concepts: dict[str, float], base: float) -> dict:
        pope = lambda acc: {"value": acc, "per_split": {s: {"accuracy": acc} for s in ("popular", "random", "adversarial")}}  # noqa: E731
        return {"evaluators": {"pope": {"settings": {"preset": "default"}, "base": {"result": pope(base)},
                                        "concepts": {c: {"plain": {"result": pope(v)}, "prompt": {"result": pope(0.0)}}
                                                     for c, v in concepts.items()}}}}
    soft = write_results(tmp_path / "soft", "yochameleon", "paper", {})
    doc = json.loads(soft.read_text())
    doc["forgetting"] = forgetting({"bo": 0.70, "mam": 0.60}, base=0.702)
    soft.write_text(json.dumps(doc))
    orig = write_results(tmp_path / "orig", "chameleon-original", "paper", {})
    doc = json.loads(orig.read_text())
    doc["forgetting"] = forgetting({}, base=0.702)
    orig.write_text(json.dumps(doc))
    table = tables.build_table(tables.load_spec("yochameleon_supp_table1"), [load_results(soft), load_results(orig)])
    got = {l.row_id: l.cells["pope_pop"] for l in table.lines if l.kind == "reproduced"}
    assert got["soft_prompt_few"].full == pytest.approx(0.65)         # mean of the concepts, plain condition
    assert got["original_chameleon"].full == pytest.approx(0.702)     # no concepts: the base model
    assert got["original_chameleon"].diff == "±0.000"


def test_reported_values_equal_the_paper_text():
    """Each row's cells, in column order, are the cells of the cited line of the paper's text."""
    def norm(s: str) -> str:
        s = s.replace("$", "").replace("\\sim ", "~").replace("\\ ", " ")
        return re.sub(r"\s+", " ", s).strip()
    shared = require_papers()
    for path in sorted((tables.leaderboards_dir() / "reported").glob("*.json")):
        rep = tables.load_reported(path)
        lines = (shared / rep.source["file"]).read_text(encoding="utf-8").splitlines()
        for r in rep.rows.values():
            if "line" not in r:   # a row the paper names without a number: every cell says so
                assert set(r["values"].values()) <= {"not printed", "-"}, f"{path.name}: {r['id']}"
                continue
            if "quote" in r:      # a number from prose: each typed number stands in the quoted words
                quotes = {r["line"]: r["quote"], **{int(k): v for k, v in r.get("quote_more", {}).items()}}
                for n, q in quotes.items():
                    assert q in lines[n - 1], f"{path.name}: {r['id']}: quote not on line {n}"
                words = " ".join(quotes.values())
                for v in r["values"].values():
                    assert v in ("-", "not printed") or v in words, f"{path.name}: {r['id']}: {v!r} not quoted"
                continue
            cells = [norm(c) for c in lines[r["line"] - 1].split("\t")]
            assert r["row"] in cells, f"{path.name}: row {r['row']!r} not on line {r['line']}"
            printed = [c for c in cells[cells.index(r["row"]) + 1:] if c]
            typed = [r["values"][c] for c in rep.columns]
            assert printed[:len(typed)] == typed, f"{path.name}: {r['id']}"
            assert all(c == "-" for c in printed[len(typed):]), f"{path.name}: {r['id']} has more cells"


def test_bad_spec_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "unifybench-spec/1", "columns": [{"id": "x"}], "rows": []}))
    with pytest.raises(tables.UserError, match="evaluator"):
        tables.load_spec(str(bad))
    with pytest.raises(tables.UserError, match="did you mean 'unictokens_table1'"):
        tables.load_spec("unictokens_tabel1")


# ---------------------------------------------------------------------------------- rendering

@pytest.mark.parametrize("name", ["unictokens_table1", "yochameleon_supp_table1"])
def test_every_reported_number_is_rendered(name):
    spec = tables.load_spec(name)
    rep = spec.reported
    table = tables.build_table(spec, [])
    md = tables.render(table, "md")
    rows = md_rows(md)
    n_numbers = 0
    for row in spec.rows:
        cells = rows[row.label]
        start = 2 if table.has_groups else 1
        assert cells[start:] == [rep.rows[row.id]["values"][c.id] for c in spec.columns], row.id
        n_numbers += sum(tables.parse_number(v) is not None for v in rep.rows[row.id]["values"].values())
    assert n_numbers > 40
    # csv: every printed cell, with its source
    got = list(csv.DictReader(io.StringIO(tables.render(table, "csv"))))
    assert len(got) == len(spec.rows) * len(spec.columns)
    for r in got:
        assert r["value"] == rep.rows[r["row_id"]]["values"][r["column_id"]]
        assert rep.source["table"] in r["source"] and repr(rep.rows[r["row_id"]]["row"]) in r["source"]
    # tex: every number appears (tex escapes '~' and '%')
    tex = tables.render(table, "tex")
    for r in rep.rows.values():
        for v in r["values"].values():
            for num in re.findall(r"\d+(?:\.\d+)?", v):
                assert num in tex


def test_table1_best_and_second_as_the_paper_marks_them():
    table = tables.build_table(tables.load_spec("unictokens_table1"), [])
    md = tables.render(table, "md")
    tex = tables.render(table, "tex")
    # Rec. Weight: RAP-MLLM best, MC-LLaVA second (GPT-4o rows are the Upper Bound: not ranked)
    assert "| **0.940** |" in md and "| <u>0.924</u> |" in md
    assert r"\textbf{0.940}" in tex and r"\underline{0.924}" in tex
    # Pure Gen. CLIP-I: Ours best (0.750) though GPT-4o+IP (0.794) and Real Images (0.832) are higher
    line = {l.row_id: l for l in table.lines}
    assert line["unictokens"].cells["gen_clip_i"].mark == "best"
    assert line["yochameleon"].cells["gen_clip_i"].mark == "second"
    assert line["gpt4o_ip"].cells["gen_clip_i"].mark is None
    assert line["real_images"].cells["gen_clip_i"].mark is None
    # T2I Score: Show-o+TP 0.770 best, Ours 0.359 second
    assert line["showo_tp"].cells["t2i_score"].mark == "best"
    assert line["unictokens"].cells["t2i_score"].mark == "second"
    # a cell the row cannot have is '-' and never ranked
    assert line["yollava"].cells["gen_clip_i"].text == "-" and line["yollava"].cells["gen_clip_i"].mark is None


def test_yochameleon_ties_share_the_mark_and_text_cells_are_not_ranked():
    table = tables.build_table(tables.load_spec("yochameleon_supp_table1"), [])
    line = {l.row_id: l for l in table.lines}
    for rid in ("original_chameleon", "soft_prompt_300", "soft_prompt_few"):
        assert line[rid].cells["pope_pop"].mark == "best"            # 0.702 three times
    assert line["full_ft_300_iter300"].cells["pope_pop"].mark == "second"
    assert line["random"].cells["clip_l"].value is None and line["random"].cells["clip_l"].text == "~0.3-0.5"
    assert line["random"].cells["pope_pop"].mark is None                # Random is a reference row
    md = tables.render(table, "md")
    assert "**0.702** (same)" in md and "0.50 (-3.8 %)" in md


def test_reproduced_lines_sit_under_their_row_with_the_difference(tmp_path):
    ours = write_results(tmp_path / "uni", "unictokens", "paper",
                         {"recognition": (0.8004, "unictokens"),
                          "clip_i": (0.7, "unifybench_legacy", {"gen": 0.74, "knowledge_gen": 0.66})})
    yoc = write_results(tmp_path / "yoc", "yochameleon", "paper",
                        {"recognition": (0.7, "unictokens"), "clip_i": (0.71, "yochameleon", {"gen": 0.71})})
    table = tables.build_table(tables.load_spec("unictokens_table1"), [load_results(ours), load_results(yoc)])
    ids = [(l.kind, l.row_id) for l in table.lines]
    assert ids.index(("reproduced", "unictokens")) == ids.index(("reported", "unictokens")) + 1
    assert ids.index(("reproduced", "yochameleon")) == ids.index(("reported", "yochameleon")) + 1
    md = tables.render(table, "md")
    rows = md_rows(md)
    rec = [c.id for c in table.columns].index("rec_weight")
    uni = rows["↳ reproduced: uni"]
    assert uni[2 + rec] == "0.800 (+0.010)"
    assert uni[2 + rec + 1] == "-"            # VQA BLEU was not run: '-', never 0
    assert uni[2] == ""                       # info columns are the paper's, blank on reproduced lines
    # ranking among reproduced lines: 0.800 best, 0.700 second
    assert "**0.800** (+0.010)" in md and "<u>0.700</u> (-0.064)" in md
    # clip_i per task: gen and knowledge_gen go to their own columns
    col = [c.id for c in table.columns]
    assert uni[2 + col.index("gen_clip_i")] == "0.740 (-0.010)"
    assert uni[2 + col.index("t2i_clip_i")] == "0.660 (-0.089)"
    # clip_i of the Yo'Chameleon run used preset 'yochameleon', the column wants the paper's 'unifybench_legacy'
    assert rows["↳ reproduced: yoc"][2 + col.index("gen_clip_i")] == "-"
    assert any("preset 'yochameleon'" in w for w in table.warnings)
    relaxed = tables.build_table(tables.load_spec("unictokens_table1"), [load_results(yoc)], any_preset=True)
    assert "0.710‡ (+0.013)" in tables.render(relaxed, "md")


def test_corrected_clip_preprocessing_is_a_second_labelled_line(tmp_path):
    """Table 1's CLIP columns are the paper's squeezed pipeline; a run with the corrected one fills a second,
    labelled, unranked line without a difference to the paper, never the reproduced line."""
    fixed = write_results(tmp_path / "fixed", "unictokens", "paper",
                          {"recognition": (0.8, "unictokens"), "clip_i": (0.7, "unifybench", {"gen": 0.76}),
                           "clip_t": (0.3, "default", {"gen": 0.31})})
    legacy = write_results(tmp_path / "legacy", "unictokens", "paper",
                           {"clip_i": (0.7, "unifybench_legacy", {"gen": 0.70})})
    table = tables.build_table(tables.load_spec("unictokens_table1"), [load_results(fixed), load_results(legacy)])
    lines = {l.label: l for l in table.lines if l.row_id == "unictokens"}
    main, second = lines["↳ reproduced: fixed"], lines["↳ corrected CLIP preprocessing (ours): fixed"]
    assert main.cells["gen_clip_i"].text == "-" and main.cells["rec_weight"].text == "0.800"
    assert second.cells["gen_clip_i"].full == 0.76 and second.cells["gen_clip_i"].diff is None
    assert second.cells["gen_clip_t"].full == 0.31 and second.cells["rec_weight"].text == ""
    assert second.kind == "second" and not second.ranked and second.cells["gen_clip_i"].mark is None
    assert lines["↳ reproduced: legacy"].cells["gen_clip_i"].full == 0.70
    assert "↳ corrected CLIP preprocessing (ours): legacy" not in lines     # nothing to show: no line
    md = tables.render(table, "md")
    assert "CLIP-I = clip_i, unifybench_legacy" in md and "corrected CLIP preprocessing (ours)\": " in md


def test_every_metric_column_states_evaluator_and_preset_and_the_table_shows_them(tmp_path):
    for name in tables.spec_names():
        spec = tables.load_spec(name)
        text = tables.render(tables.build_table(spec, []), "md")
        for col in spec.columns:
            if col.kind == "metric":
                assert col.evaluator and col.preset, f"{name}/{col.id}"
                assert f"{tables.column_title(col)} = {col.evaluator}, {' or '.join(col.preset)}" in text
    bad = json.loads((tables.leaderboards_dir() / "specs" / "unictokens_table1.json").read_text())
    bad["columns"] = [c for c in bad["columns"] if c.get("kind") != "info"]
    bad["columns"][0]["preset"] = None
    bad["reported"], bad["rows"] = None, []
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(tables.UserError, match="preset"):
        tables.load_spec(str(tmp_path / "bad.json"))


def test_task_columns_need_a_by_task_breakdown(tmp_path):
    flat = write_results(tmp_path / "flat", "unictokens", "paper", {"clip_i": (0.7, "unifybench_legacy")})
    table = tables.build_table(tables.load_spec("unictokens_table1"), [load_results(flat)])
    line = [l for l in table.lines if l.kind == "reproduced"][0]
    assert line.cells["gen_clip_i"].text == "-" and line.cells["t2i_clip_i"].text == "-"
    assert any("no by_task['gen']" in w for w in table.warnings)


def test_tiny_rows_are_marked_and_never_ranked(tmp_path):
    tiny = write_results(tmp_path / "tiny-run", "yochameleon", "tiny", {"recognition": (0.5, "unictokens")},
                         tiny=True, benchmark="unifybench-mini")
    table = tables.build_table(tables.load_spec("unictokens_table1"), [load_results(tiny)])
    md = tables.render(table, "md")
    assert "↳ reproduced: tiny-run†" in md
    assert tables.TINY_FOOTNOTE in md
    line = [l for l in table.lines if l.kind == "reproduced"][0]
    assert line.tiny and all(c.mark is None for c in line.cells.values())
    tex = tables.render(table, "tex")
    assert r"tiny-run$^\dagger$" in tex and r"$^\dagger$ tiny random models" in tex
    rows = list(csv.DictReader(io.StringIO(tables.render(table, "csv"))))
    assert {r["tiny"] for r in rows if r["kind"] == "reproduced"} == {"true"}


def test_unmatched_runs_and_forced_rows(tmp_path):
    other = write_results(tmp_path / "other", "somebody_else", "paper", {"recognition": (0.6, "unictokens")})
    table = tables.build_table(tables.load_spec("unictokens_table1"), [load_results(other)])
    assert table.lines[-1].kind == "extra" and table.lines[-1].group == tables.EXTRA_GROUP
    assert "somebody_else (paper): other" in tables.render(table, "md")
    stage = write_results(tmp_path / "s1", "unictokens", "paper", {"recognition": (0.6, "unictokens")})
    forced = tables.build_table(tables.load_spec("unictokens_table3_stages"), [load_results(stage)],
                                {stage: "stage1"})
    kinds = [(l.kind, l.row_id) for l in forced.lines]
    assert kinds[1] == ("reproduced", "stage1")
    assert forced.lines[1].cells["rec_weight"].diff == "-0.037"


def test_match_prefers_method_and_preset():
    spec = tables.load_spec("unictokens_table1")

    class RF:
        def __init__(self, m, p):
            self.method, self.preset = m, p
    assert tables.match_row(spec, RF("yollava", "paper")).id == "yollava"
    assert tables.match_row(spec, RF("yollava", "phi")).id == "yollava_phi15"
    assert tables.match_row(spec, RF("yollava", "other")) is None
    assert tables.match_row(spec, RF("yochameleon", "tiny")).id == "yochameleon"


# ---------------------------------------------------------------------------------- command line

def test_cli_table(tmp_path, capsys):
    res = write_results(tmp_path / "run", "unictokens", "paper", {"recognition": (0.79, "unictokens")})
    out = tmp_path / "t1.tex"
    assert cli_main(["table", str(res.parent), "--spec", "unictokens_table1", "--format", "tex",
                     "--out", str(out)]) == 0
    assert r"\textbf{0.940}" in out.read_text() and "0.790 (" in out.read_text()
    assert cli_main(["table", "--spec", "yochameleon_supp_table1", "--format", "md"]) == 0
    assert "0.849" in capsys.readouterr().out
    assert cli_main(["table", "--list"]) == 0
    assert "unictokens_appendix_f_token_length" in capsys.readouterr().out
    assert cli_main(["table", str(res), "--spec", "nope"]) == 2
    assert cli_main(["table", str(tmp_path / "missing"), "--spec", "unictokens_table1"]) == 2
    assert cli_main(["table", "--spec", "unictokens_table3_stages", "--row", f"{res}=stage9"]) == 2
    assert "unknown table spec 'nope'" in capsys.readouterr().err


def test_custom_spec_rows_outside_the_paper_and_unranked_rows(tmp_path):
    reported = tables.leaderboards_dir() / "reported" / "unictokens_table2_generation.json"
    spec_path = tmp_path / "mine.json"
    spec_path.write_text(json.dumps({
        "format": "unifybench-spec/1", "name": "mine", "title": "Mine", "reported": str(reported),
        "benchmarks": ["dreambench"], "rank": {"exclude_rows": ["real_images"]},
        "columns": [{"id": "dreambench_clip_i", "label": "CLIP-I", "evaluator": "clip_i", "preset": "default",
                     "higher_is_better": True}],
        "rows": [{"id": "real_images", "match": [{"method": "real_images"}]},
                 {"id": "yochameleon", "match": [{"method": "yochameleon"}]},
                 {"id": "random", "label": "Random baseline", "match": [{"method": "random"}]}]}))
    runs = [write_results(tmp_path / n, m, "paper", {"clip_i": (v, "default")}, benchmark="dreambench")
            for n, m, v in [("real", "real_images", 0.99), ("yoc", "yochameleon", 0.8), ("rnd", "random", 0.1)]]
    table = tables.build_table(tables.load_spec(str(spec_path)), [load_results(r) for r in runs])
    line = {(l.kind, l.row_id): l for l in table.lines}
    assert line[("reproduced", "real_images")].cells["dreambench_clip_i"].mark is None   # reference row
    assert line[("reproduced", "yochameleon")].cells["dreambench_clip_i"].mark == "best"
    assert line[("reproduced", "random")].cells["dreambench_clip_i"].mark == "second"
    assert line[("reported", "random")].cells["dreambench_clip_i"].text == ""          # not in the paper
    # the only ranked paper value (0.795; Real Images' 0.885 is not ranked): one value gets no mark
    assert line[("reported", "yochameleon")].cells["dreambench_clip_i"].mark is None
    assert line[("reproduced", "random")].cells["dreambench_clip_i"].diff is None
    md = tables.render(table, "md")
    assert "| Random baseline |  |" in md and "**0.800** (+0.005)" in md and "<u>0.100</u> |" in md


def test_yollava_mc_columns_read_the_by_kind_breakdown(tmp_path):
    run = write_results(tmp_path / "yl", "yollava", "paper", {"mc": (0.8, "unictokens")}, benchmark="yollava")
    doc = json.loads(run.read_text())
    doc["results"]["yollava"]["mc"]["by_kind"] = {"visual_qa": {"value": 0.9}, "text_qa": {"value": 0.7}}
    doc["results"]["yollava"]["mc"]["beside_default"] = {
        "preset": "default", "by_kind": {"visual_qa": {"value": 0.5}, "text_qa": {"value": 0.25}}}
    run.write_text(json.dumps(doc))
    table = tables.build_table(tables.load_spec("unictokens_table2_understanding"), [load_results(run)])
    line = next(l for l in table.lines if l.kind == "reproduced")
    assert line.row_id == "yollava"
    assert line.cells["yollava_vqa_acc"].full == 0.9 and line.cells["yollava_qa_acc"].full == 0.7
    # our circular figure beside each, labelled, with no paper value to differ from
    assert line.cells["yollava_vqa_acc_circular"].full == 0.5 and line.cells["yollava_vqa_acc_circular"].diff is None
    assert line.cells["yollava_qa_acc_circular"].full == 0.25
    cols = [c.label for c in table.columns]
    assert cols.index("VQA Acc (circular, ours)") == cols.index("VQA Acc") + 1
    circular_only = write_results(tmp_path / "c", "yollava", "paper", {"mc": (0.8, "default")}, benchmark="yollava")
    table = tables.build_table(tables.load_spec("unictokens_table2_understanding"), [load_results(circular_only)])
    line = next(l for l in table.lines if l.kind == "reproduced")
    assert line.cells["yollava_vqa_acc"].text == "-"        # a circular run never fills the paper's column
