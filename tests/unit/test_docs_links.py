"""Every relative link in README.md, CONTRIBUTING.md and docs/*.md resolves, anchors included."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Inline links and images, `[text](target)` or `[text](target "title")`; reference definitions `[x]: target`.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXPLICIT_ANCHOR = re.compile(r"""<a\s+(?:name|id)=["']([^"']+)["']""")


def doc_files(root: Path = ROOT) -> list[Path]:
    """The Markdown files whose links are checked."""
    files = [root / "README.md", root / "CONTRIBUTING.md", *sorted((root / "docs").glob("*.md"))]
    return [f for f in files if f.exists()]


def strip_code(text: str) -> str:
    """The text without fenced code blocks and inline code spans, where brackets are not links."""
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", strip_code_blocks_only(text))


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: inline markup dropped, lower case, punctuation removed, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "").replace("~", "")
    text = text.strip().lower()
    # GitHub keeps letters, digits, '_', '-' and spaces (after the markup above is gone) and drops the rest.
    kept = "".join(
        ch for ch in text if ch in "-_ " or unicodedata.category(ch)[0] in ("L", "N") or unicodedata.category(ch) == "Mn"
    )
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file defines: one per heading (duplicates get -1, -2, ...) and explicit <a name>."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    text = path.read_text(encoding="utf-8")
    for line in strip_code_blocks_only(text).splitlines():
        match = HEADING.match(line)
        if match:
            slug = github_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    found.update(EXPLICIT_ANCHOR.findall(text))
    return found


def strip_code_blocks_only(text: str) -> str:
    """The text without fenced code blocks (a '# comment' inside one is not a heading)."""
    out, fence = [], ""
    for line in text.splitlines():
        marker = re.match(r"^\s{0,3}(`{3,}|~{3,})", line)
        if marker and (not fence or line.lstrip().startswith(fence)):
            fence = "" if fence else marker.group(1)[0] * 3
            out.append("")
            continue
        out.append("" if fence else line)
    return "\n".join(out)


def links(path: Path) -> list[str]:
    """The link targets written in a Markdown file, outside code."""
    text = strip_code(path.read_text(encoding="utf-8"))
    return INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of `path` whose file or anchor does not exist, with the reason."""
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("//"):
            continue  # http:, https:, mailto: ... are not checked offline
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{path.relative_to(root)}: {target}: no such file")
            continue
        if root.resolve() not in (dest, *dest.parents):
            problems.append(f"{path.relative_to(root)}: {target}: points outside the repository")
            continue
        if anchor:
            if dest.is_dir() or dest.suffix != ".md":
                problems.append(f"{path.relative_to(root)}: {target}: an anchor on a file that is not Markdown")
            elif anchor not in anchors(dest):
                problems.append(f"{path.relative_to(root)}: {target}: no heading with that anchor")
    return problems


def test_the_docs_exist() -> None:
    """The front page, the contributor guide and the manual's pages are where the README links to."""
    names = {p.relative_to(ROOT).as_posix() for p in doc_files()}
    assert {"README.md", "CONTRIBUTING.md", "docs/deploy.md", "docs/real-tenant.md", "docs/api.md"} <= names


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path: Path) -> None:
    """Each relative link names an existing file, and each anchor a heading in it."""
    assert links(path) or path.name != "README.md", "the README links to nothing"
    assert broken_links(path) == []


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    """No page of docs/ is an orphan: the README, or a page it links to, links to each."""
    reached, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        for target in links(page):
            file_part = target.partition("#")[0]
            if file_part and not re.match(r"^[a-z][a-z0-9+.-]*:", file_part, re.IGNORECASE):
                dest = (page.parent / file_part).resolve()
                if dest.suffix == ".md" and dest.exists():
                    todo.append(dest)
    assert [p.name for p in doc_files() if p.resolve() not in reached] == []


def test_the_readme_is_a_front_page() -> None:
    """The README stays about one screenful of sections, with the deploy path's status near the top."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 170
    top = text[: len(text) // 3]
    assert "never been compiled" in top and "nor deployed" in top
    # Contributor material (fault-matrix test ids, import rules, emulator internals) lives in CONTRIBUTING/docs.
    assert "::test_" not in text and "may import" not in text and "server.py" not in text


@pytest.mark.parametrize("command", ["./scripts/demo", "./scripts/test", "./scripts/test --quick", "./scripts/serve"])
def test_the_readme_says_how_long_each_command_takes(command: str) -> None:
    """Each quick-start command's row in the README's table states its time."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith(f"| `{command}` |")]
    assert len(rows) == 1, rows
    assert re.search(r"\b\d+(\.\d+)? (s|min)\b", rows[0].split("|")[3]), rows[0]


def test_deployment_is_described_once() -> None:
    """One page describes deploying: the azd and the by-hand procedures appear in docs/deploy.md only."""
    for marker in ("azd env new", "az deployment sub create", "func azure functionapp publish <AZURE_FUNCTION_APP_NAME>"):
        holders = [
            p.relative_to(ROOT).as_posix() for p in doc_files() for _ in range(p.read_text(encoding="utf-8").count(marker))
        ]
        assert holders == ["docs/deploy.md"], (marker, holders)


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Local development: `./scripts/serve`", "local-development-scriptsserve"),
        ("Inside `emulator/`", "inside-emulator"),
        ("By hand: `az deployment` and `func publish`", "by-hand-az-deployment-and-func-publish"),
        ("Hostile input, secrets, load", "hostile-input-secrets-load"),
        ("Status: parsed and scanned, never compiled or deployed", "status-parsed-and-scanned-never-compiled-or-deployed"),
        ("What `./scripts/test` checks_now", "what-scriptstest-checks_now"),
        ("Über straße", "über-straße"),
        ("A [link](x.md) heading", "a-link-heading"),
    ],
)
def test_github_slug(heading: str, slug: str) -> None:
    """Anchors follow GitHub's rules for headings."""
    assert github_slug(heading) == slug


def test_the_checker_finds_broken_links(tmp_path: Path) -> None:
    """A missing file, a missing anchor and a missing anchor on another page are reported; code is ignored."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Two words\n\n## Two words\n", encoding="utf-8")
    sample = tmp_path / "README.md"
    sample.write_text(
        "# Title\n\n"
        "[ok](docs/a.md) [ok](docs/a.md#two-words) [ok](docs/a.md#two-words-1) [ok](#title)\n"
        "[gone](docs/missing.md) [bad anchor](docs/a.md#three-words) [bad self](#nope)\n"
        "[web](https://example.com/x#y) `[in code](nowhere.md)`\n\n"
        "```\n[in a fence](nowhere-either.md)\n# not a heading\n```\n\n"
        "[ref]: docs/also-missing.md\n",
        encoding="utf-8",
    )
    assert broken_links(sample, root=tmp_path) == [
        "README.md: docs/missing.md: no such file",
        "README.md: docs/a.md#three-words: no heading with that anchor",
        "README.md: #nope: no heading with that anchor",
        "README.md: docs/also-missing.md: no such file",
    ]
    assert "not-a-heading" not in anchors(sample)
