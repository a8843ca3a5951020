"""The README stays the page a new user reads, and the documentation stays inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_LIMIT_BYTES = 15_000
# Folders that are not the project's own text: tool caches, virtualenvs, build output.
SKIPPED_DIRS = {"__pycache__", "build", "dist", "bench-results", "node_modules", "artifacts"}
# Written in two parts so that this file does not name what it looks for.
OUTSIDE_REFERENCES = ("SPEC" + ".md", ".." + "/shared")
# A section number of a contract file a reader of the repository does not have (the word,
# then a number or a section sign): built in parts, like the needles above.
SPEC_SECTION = re.compile(r"\b" + "SP" + r"EC\s*§?\s*\d")
# Every kind of file the project writes text in: docs, code, the dashboard's assets.
TEXT_SUFFIXES = (".md", ".py", ".js", ".html", ".css", ".toml", ".yml", ".ini")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def project_files(*suffixes: str) -> list[Path]:
    """The repository's own files with these suffixes (no hidden folders, caches or venvs)."""
    found = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if any(p.startswith(".") or p in SKIPPED_DIRS or p.endswith(".egg-info") for p in parts):
            continue
        if path.is_file() and path.suffix in suffixes:
            found.append(path)
    return found


def documentation() -> list[Path]:
    """The pages whose links must resolve: README, changelog, docs/ and the bench method."""
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "tests" / "bench" / "README.md"]
    return pages + sorted((ROOT / "docs").glob("*.md"))


def anchor(heading: str) -> str:
    """The fragment a heading gets on GitHub: lowercase, punctuation dropped, spaces to -."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's fragment on a page (code blocks left out: their # are not headings)."""
    text = FENCE.sub("", page.read_text())
    return {anchor(h) for h in HEADING.findall(text)}


def test_the_readme_is_at_most_15000_bytes():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT_BYTES, f"README.md is {size} bytes"


def test_no_file_refers_to_a_contract_outside_the_repository():
    offenders = [
        f"{path.relative_to(ROOT)}: {needle}"
        for path in project_files(*TEXT_SUFFIXES)
        for needle in OUTSIDE_REFERENCES
        if needle in path.read_text(errors="replace")
    ]
    assert offenders == []


def test_no_file_cites_sections_of_a_contract_the_repository_does_not_ship():
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in project_files(*TEXT_SUFFIXES)
        for match in SPEC_SECTION.finditer(path.read_text())
    ]
    assert offenders == []


def broken_links(page: Path, root: Path) -> list[str]:
    """Relative links of a page that leave ``root``, name no file, or name no heading."""
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # an absolute URL (http:, mailto:), not a file of the repository
        path_part, _, fragment = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.relative_to(root)} -> {target}"
        if not linked.is_relative_to(root):
            broken.append(f"{where}: outside the repository")
        elif not linked.exists():
            broken.append(f"{where}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{where}: no such heading")
    return broken


def test_every_relative_link_of_the_documentation_points_to_a_file_in_the_repository():
    missing = [
        f"{page.relative_to(ROOT)} is missing" for page in documentation() if not page.exists()
    ]
    broken = [
        link for page in documentation() if page.exists() for link in broken_links(page, ROOT)
    ]
    assert missing + broken == []


def test_the_link_check_finds_links_out_of_the_repository_to_no_file_or_to_no_heading(tmp_path):
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "api.md").write_text(
        "# API\n\n## 5. Delivery\n\n```sh\n# not a heading\n```\n"
    )
    page = root / "README.md"
    page.write_text(
        "[ok](docs/api.md#5-delivery) [web](https://example.com) [here](#top)\n"
        "[gone](docs/nowhere.md) [heading](docs/api.md#not-a-heading) [out](../elsewhere/x.md)\n"
        "# Top\n"
    )
    assert anchors(root / "docs" / "api.md") == {"api", "5-delivery"}
    assert (
        anchor("6.2 `/api/webhooks` (organization service)")
        == "62-apiwebhooks-organization-service"
    )
    assert [b.split(": ")[-1] for b in broken_links(page, root)] == [
        "no such file",
        "no such heading",
        "outside the repository",
    ]


def test_the_readme_shows_the_test_command_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    marker = next(i for i, line in enumerate(ci) if "README's test command" in line)
    command = next(line.strip() for line in ci[marker + 1 :] if line.strip())
    assert f"```sh\n{command}\n```" in (ROOT / "README.md").read_text(), command
