"""Static checks of the deployment that need no Azure and no Bicep compiler.

1. checkov (bicep framework) over infra/: zero failed checks and zero parsing
   errors. checkov exits 0 on a file it cannot parse, so its JSON report is
   read instead of its exit code. Its parser (pycep 0.5.1, pinned by checkov)
   predates Bicep's ``extension`` statement and ``deployer()`` function, so it
   scans a copy of infra/ in which ``extension`` lines are commented out and
   ``deployer()`` reads ``deployment()``; nothing else differs. The template
   tests parse the files unchanged with the current pycep release.
2. Every ``checkov:skip`` suppression carries a reason and silences a check that fires, and there are
   no more of them than SKIP_BUDGET. A check that crashes on a value it cannot read (checkov logs
   "Failed to run check") counts as a failure unless it is suppressed with a reason.
3. azure-functions-doctor over the app: zero failures; each warning is listed by name.

    .venv-tools/bin/python tools/check_infra.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
EXTENSION = re.compile(r"^extension\s+\S+.*$", re.M)
# deployer() (Bicep 0.32+) has the shape of deployment(), which the old parser knows;
# checkov has no check that reads either.
DEPLOYER = re.compile(r"\bdeployer\(\)")
SKIP = re.compile(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?")
# checkov logs a check that raised on a value (a Bicep expression where it expects a string) and then
# reports it neither passed nor failed.
CRASHED = re.compile(r"Failed to run check (CKV2?_[A-Z0-9_]+) on (\S+):(\S+)")
# The suppressions infra/ may carry; lower it when one goes. Each is explained in the deploy docs.
SKIP_BUDGET = 9


def parser_text(text: str) -> tuple[str, int]:
    """Bicep source as checkov's parser can read it; returns the text and how many rewrites."""
    text, extensions = EXTENSION.subn(lambda m: "// " + m.group(0), text)
    text, deployers = DEPLOYER.subn("deployment()", text)
    return text, extensions + deployers


def parser_copy(dest: Path) -> int:
    """Copy infra/ to ``dest`` rewritten for checkov's parser (``parser_text``); returns how many rewrites."""
    shutil.copytree(INFRA, dest)
    changed = 0
    for path in dest.rglob("*.bicep"):
        new, n = parser_text(path.read_text())
        if n:
            path.write_text(new)
            changed += n
    return changed


def check_suppressions() -> list[str]:
    problems = []
    for path in sorted(INFRA.rglob("*.bicep")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for m in SKIP.finditer(line):
                if len((m.group(2) or "").strip()) < 15:
                    problems.append(f"{path.relative_to(ROOT)}:{number}: {m.group(1)} is suppressed without a reason")
    return problems


def crashed_checks(stderr: str) -> set[tuple[str, str]]:
    """(check id, resource) of every check checkov could not run, from its log."""
    return {(m.group(1), m.group(3)) for m in CRASHED.finditer(stderr)}


def run_checkov(directory: Path) -> tuple[int, int, list[str], set[str]]:
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "LOG_LEVEL": "ERROR"}
    checkov = Path(sys.executable).with_name("checkov")
    out = subprocess.run(
        [str(checkov), "-d", str(directory), "--framework", "bicep", "-o", "json", "--skip-download", "--compact"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"checkov printed no JSON report (exit {out.returncode}):\n{out.stderr[-2000:]}") from None
    reports = report if isinstance(report, list) else [report]
    failed, parse_errors, lines, skipped_ids = 0, 0, [], set()
    skipped_at = {(c["check_id"], c.get("resource", "")) for r in reports for c in r.get("results", {}).get("skipped_checks", [])}
    for check_id, resource in sorted(crashed_checks(out.stderr)):
        if (check_id, resource) in skipped_at:
            print(f"checkov: {check_id} cannot read {resource} (suppressed with a reason)")
        else:
            failed += 1
            lines.append(f"FAILED {check_id} crashed on {resource}: checkov could not read the value")
    for r in reports:
        summary = r.get("summary", {})
        failed += int(summary.get("failed", 0))
        parse_errors += int(summary.get("parsing_errors", 0))
        for check in r.get("results", {}).get("failed_checks", []):
            lines.append(
                f"FAILED {check['check_id']} {check.get('check_name', '')} "
                f"{check.get('file_path', '')}:{check.get('resource', '')}"
            )
        skipped_ids |= {c["check_id"] for c in r.get("results", {}).get("skipped_checks", [])}
        passed = summary.get("passed", 0)
        skipped = summary.get("skipped", 0)
        print(
            f"checkov: {passed} passed, {summary.get('failed', 0)} failed, {skipped} skipped with a reason, "
            f"{summary.get('parsing_errors', 0)} parsing errors"
        )
    return failed, parse_errors, lines, skipped_ids


def suppressed_ids() -> set[str]:
    return {m.group(1) for path in INFRA.rglob("*.bicep") for m in SKIP.finditer(path.read_text())}


def doctor_lines(report: dict[str, Any]) -> list[str]:
    """One line per warning or failure in a doctor JSON report: status, rule id, label, the finding's first line."""
    lines = []
    for group in report.get("results", []):
        for item in group.get("items", []):
            if item.get("status") in ("warn", "fail"):
                finding = str(item.get("value", "")).strip().splitlines()
                lines.append(
                    f"  {item['status']} {item.get('rule_id', '?')} ({item.get('label', '')}): {finding[0] if finding else ''}"
                )
    return lines


def run_doctor() -> int:
    doctor = Path(sys.executable).with_name("azure-functions-doctor")
    with tempfile.TemporaryDirectory() as tmp:
        summary, report = Path(tmp) / "summary.json", Path(tmp) / "report.json"
        out = subprocess.run(
            [
                *(str(doctor), "doctor", "--path", str(ROOT), "--profile", "full"),
                *("--summary-json", str(summary), "--format", "json", "--output", str(report)),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if not summary.exists() or not report.exists():
            raise SystemExit(f"azure-functions-doctor wrote no report (exit {out.returncode}):\n{out.stdout[-2000:]}")
        counts = json.loads(summary.read_text())
        findings = doctor_lines(json.loads(report.read_text()))
    fails = int(counts.get("failed", counts.get("fails", 0)))
    print(
        f"azure-functions-doctor: {counts.get('passed', 0)} passed, {counts.get('warned', 0)} warned, "
        f"{fails} failed, {counts.get('skipped', 0)} skipped"
    )
    for line in findings:
        print(line)
    return fails


def main() -> int:
    problems = check_suppressions()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "infra"
        n = parser_copy(copy)
        print(f"scanning a copy of infra/ with {n} rewrite(s) (extension, deployer()) for checkov's parser")
        failed, parse_errors, lines, skipped_ids = run_checkov(copy)
    problems += lines
    suppressions = sum(len(SKIP.findall(path.read_text())) for path in INFRA.rglob("*.bicep"))
    if suppressions > SKIP_BUDGET:
        problems.append(f"{suppressions} checkov suppressions, more than SKIP_BUDGET ({SKIP_BUDGET}): fix the finding instead")
    stale = suppressed_ids() - skipped_ids
    if stale:
        problems.append(f"suppressions of checks that do not fire (remove them): {', '.join(sorted(stale))}")
    if failed:
        problems.append(f"checkov: {failed} failed checks")
    if parse_errors:
        problems.append(f"checkov: {parse_errors} files could not be parsed")
    if run_doctor():
        problems.append("azure-functions-doctor reported failures")
    for p in problems:
        print(p, file=sys.stderr)
    print("infra checks: " + ("FAILED" if problems else "ok"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
