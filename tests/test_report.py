"""experiments.report's summary: tables and the sentence on the paper's ordering."""

import json

from experiments import report


def test_ordering_sentence_states_each_claim_and_its_firmness():
    acc = {
        "unimodal": 0.90,
        "joint (concat)": 0.93,
        "OGM-GE": 0.92,
        "MLA": 0.91,
        "MIE w/o SAM": 0.94,
        "MIE w/o GM": 0.96,
        "MIE": 0.95,
        "MIE (weighted fusion)": 0.95,
    }
    std = dict.fromkeys(acc, 0.005)
    sentence = report.ordering_sentence(acc, std)
    assert sentence.startswith("Ranking by mean accuracy: MIE w/o GM > MIE")
    assert "MIE (0.9500) beats the best peer (joint (concat), 0.9300)" in sentence
    assert "removing SAM lowers accuracy" in sentence
    assert "removing gradient modification does not lower it" in sentence
    assert "(+0.0200) is larger than one standard deviation over seeds (0.0050)" in sentence
    assert report.lead_verdict(acc, std) == "MIE is ahead by more than one standard deviation"
    assert report.lead_verdict(acc, dict.fromkeys(acc, 0.05)) == "MIE is ahead, within one standard deviation"
    assert report.lead_verdict({**acc, "MIE": 0.92}, std) == "MIE is behind its best peer"
    row = report.overview_row("s", acc, std)
    assert row == "| s | 0.9500 | joint (concat) (0.9300) | +0.0200 (0.0050) | +0.0100 (0.0050) | -0.0100 (0.0050) |"


CPU = {"backend": "cpu", "cpu": "Some CPU", "cpu_count": 2, "device_kind": "cpu", "jax": "0.10.2"}
GPU = {"backend": "gpu", "cpu": "Some CPU", "cpu_count": 16, "device_kind": "NVIDIA H200", "jax": "0.11.2"}


def write_runs(tmp_path, seeds=2, skip=()):
    """Fake stored runs of every setting and row, but the rows labelled in ``skip``."""
    (tmp_path / "runs").mkdir()
    for setting, _, values in report.SETTINGS:
        modalities = values.get("modalities", ("image", "text"))
        for label, method, _, fusion_name in report.METHODS:
            if label in skip:
                continue
            headline = "joint" if method in ("joint", "ogm_ge") else fusion_name
            names = [headline] if headline == "joint" else [headline, *modalities]
            for seed in range(seeds):
                metrics = {k: 0.9 + 0.01 * seed for k in report.METRIC_NAMES}
                curves = [{n: 0.5 + 0.1 * phase for n in names} for phase in range(3)]
                run = {
                    "headline": headline,
                    "test": {n: metrics for n in names},
                    "phase_accuracy": curves,
                    "machine": GPU if setting.startswith("emoji") else CPU,
                }
                path = tmp_path / "runs" / (report.run_name(setting, label, seed) + ".json")
                path.write_text(json.dumps(run))


def test_summary_averages_seeds_from_stored_runs(tmp_path):
    write_runs(tmp_path)
    text = report.summarise(
        str(tmp_path),
        seeds=2,
        quick=True,
        data_dirs={"emoji": "somewhere"},
        figures={"mfeat pix+fou": "figures/pix_fou.png"},
    )
    assert text.count("`python -m experiments.report --quick --emoji-dir DIR`") == 1
    assert (
        text.count("](figures/") == 1 and "![mfeat pix+fou: validation accuracy per phase](figures/pix_fou.png)" in text
    )
    assert "| MIE | 0.9050 ± 0.0050 | 0.9050 ± 0.0050 | 0.9050 ± 0.0050 |" in text
    assert text.count("\n## ") == 1 + len(report.SETTINGS) and "## emoji image+text" in text
    assert "Not run here" not in text
    assert "| mfeat fac+mor | 0.9050 | unimodal (0.9050) | +0.0000 (0.0050) | +0.0000 (0.0050) |" in text
    emoji_section = text.split("## emoji image+text")[1]
    assert "Ran on NVIDIA H200, jax 0.11.2." in emoji_section and "cores" not in emoji_section
    assert text.count("Ran on Some CPU (2 cores), jax 0.10.2.") == len(report.SETTINGS) - 1

    figure = report.figure_path(str(tmp_path), "mfeat fac+mor+zer")
    report.plot_phase_accuracy(str(tmp_path), "mfeat fac+mor+zer", 2, figure)
    assert figure.endswith("figures/phase_accuracy_mfeat_fac_mor_zer.png")
    with open(figure, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_settings_without_their_data_are_named_not_run():
    assert [s[1] for s in report.settings_to_run({})] == ["mfeat"] * 3
    jobs = report.plan("out", 1, False, {"emoji": "data/emoji"})
    assert {job[2] for job in jobs if job[1] == "emoji"} == {"data/emoji"}
    assert len(jobs) == len(report.SETTINGS) * len(report.METHODS)


def test_plan_is_seed_major_so_parallel_workers_start_on_different_methods():
    jobs = report.plan("out", 2, False, {})
    first_wave = [job[4:6] for job in jobs[: len(report.METHODS)]]
    assert {job[6] for job in jobs[: len(report.METHODS)]} == {0}
    assert first_wave == [(method, fusion) for _, method, _, fusion in report.METHODS]


def test_quick_report_defaults_keep_off_the_committed_runs_and_results():
    quick, full = report.parse_args(["--quick"]), report.parse_args([])
    assert (full.out, full.results) == ("reports", "RESULTS.md")
    assert (quick.out, quick.results) == ("reports/quick", "reports/quick/RESULTS.md")
    assert report.parse_args(["--quick", "--out", "o", "--results", "r.md"]).results == "r.md"


def test_rows_not_run_yet_are_listed_and_training_can_be_limited_to_some_settings(tmp_path):
    write_runs(tmp_path, skip=("OGM-GE",))
    text = report.summarise(str(tmp_path), seeds=2, quick=False, data_dirs={})
    assert text.count("Not run yet (2 seeds each): OGM-GE.") == 3 and "| OGM-GE |" not in text
    jobs = report.plan("out", 1, False, {"emoji": "data/emoji"}, train_settings={"mfeat fac+mor"})
    assert {job[0].split("/")[-1].split("_")[1] for job in jobs} == {"fac"} and len(jobs) == len(report.METHODS)
    assert report.main(["--train-settings", "mfeat fac+nothing", "--out", str(tmp_path)]) == 2
