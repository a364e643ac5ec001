"""The documentation: README.md (at most 200 lines, its links resolve) and the mkdocs site under docs/,
built offline with --strict so that a dead link, a missing anchor or a page left out of nav fails."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
ENV = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # mkdocs-material's end-of-life banner


def build(project: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=project, capture_output=True, text=True, env=ENV, timeout=120)


def load_mkdocs_yml() -> dict:
    class Loader(yaml.SafeLoader):  # mkdocs' own tags (!relative) are not plain YAML
        pass
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def nav_files(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [f for v in nav.values() for f in nav_files(v)]
    return [f for item in nav for f in nav_files(item)]


def anchors(md: Path) -> set[str]:
    """Heading ids as Python-Markdown's toc extension makes them, plus explicit `{ #id }` attributes."""
    ids, fence = set(), False
    for line in md.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"#{1,6} (.*)", line)):
            ids.add(slugify(m.group(1).replace("`", ""), "-"))
        if not fence:
            ids.update(re.findall(r"\{\s*#([\w-]+)\s*\}", line))
    return ids


def test_site_builds_offline_with_strict_checks(tmp_path):
    r = build(ROOT, tmp_path / "site")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "WARNING" not in r.stderr, r.stderr[-3000:]
    for page in nav_files(load_mkdocs_yml()["nav"]):
        assert (tmp_path / "site" / page.replace(".md", ".html")).is_file(), page
    setup = (tmp_path / "site/setup.html").read_text()  # the README's sections, included whole
    assert "python -m pytest" in setup and "constraints.txt" in setup and "8&lt;" not in setup
    index = (tmp_path / "site/index.html").read_text()
    assert "fonts.googleapis.com" not in index  # theme.font: false: nothing loaded from the network


@pytest.mark.parametrize("bad, named", [
    ("[a missing anchor](data.md#no-such-anchor)", "no-such-anchor"),
    ("[a missing page](no-such-page.md)", "no-such-page.md"),
])
def test_strict_build_fails_on_a_dead_link(tmp_path, bad, named):
    """The check can fail: the same site with one bad link added to a page does not build."""
    project = tmp_path / "p"
    shutil.copytree(DOCS, project / "docs")
    for f in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / f, project / f)
    with open(project / "docs/method.md", "a") as f:
        f.write(f"\nSee {bad}.\n")
    r = build(project, tmp_path / "site")
    assert r.returncode != 0
    assert named in r.stdout + r.stderr and "method.md" in r.stdout + r.stderr


def test_every_docs_page_is_in_the_nav():
    nav = nav_files(load_mkdocs_yml()["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages
    assert len(set(nav)) == len(nav)


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "**Tests:** `python -m pytest`" in text
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    relative = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert relative, "the README links the documentation pages"
    for link in relative:
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else ROOT / "README.md"
        assert target.exists(), link
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), link
