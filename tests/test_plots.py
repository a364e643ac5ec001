"""The offline plots page and the PR-curve plot definitions (the page drawn in Chromium: test_dvc_pipeline)."""
import pytest

from pipeline.core.errors import PipelineError
from pipeline.core.params import MAP_METHODS
from pipeline.evaluation.plots import offline_page, pr_plots


def test_the_page_carries_vega_inline_and_only_dvcs_plot_placeholder():
    page = offline_page("5.21")
    assert page.count("{plot_divs}") == 1 and "{scripts}" not in page  # DVC's CDN tags have nowhere to go
    assert "renderer:\"svg\"" in page.replace("'", '"').replace(" ", "") and "https://cdn" not in page
    assert page.index("<script>") < page.index("</script>") < page.index("{plot_divs}")
    assert len(page) > 500_000  # Vega, Vega-Lite and Vega-Embed themselves, not a loader


def test_an_unbundled_vega_lite_version_is_one_line_naming_the_known_ones():
    with pytest.raises(PipelineError, match=r"plots.vega_lite '4.0': this vl-convert-python bundles Vega-Lite .*5\.21"):
        offline_page("4.0")


def test_one_pr_chart_per_set_with_a_line_per_method():
    charts = pr_plots(["ECSSD", "DUTS-TE"])
    assert [next(iter(c)) for c in charts] == ["PR curves: ECSSD", "PR curves: DUTS-TE"]
    duts = charts[1]["PR curves: DUTS-TE"]
    assert (duts["x"], duts["template"]) == ("recall", "linear")
    assert duts["y"] == {f"plots/pr/DUTS-TE/{m}.csv": "precision" for m in MAP_METHODS}
