"""Nothing exposed: outside text is escaped in the report, and secrets reach no output.

One real run of a crashing target whose command line, URL, environment and last words all
carry secrets and markup; then every file the runner wrote (all but ``target.log``, the
target's own raw output), the history database and the terminal are searched for them.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.faults.conftest import assert_nothing_left

pytestmark = pytest.mark.faults

SECRETS = {
    "command": "cmdline-tok-4f9a2b",
    "url": "query-tok-77c1d0",
    "userinfo": "url-pass-0b3e9f",
    "environment": "env-secret-5d1c8a",
    "log": "logged-pass-a1b2c3",
}
SCRIPT = '<script>alert("owned")</script>'


@pytest.fixture(scope="module")
def exposed_run(tmp_path_factory):
    from tests.faults.conftest import start_soak

    folder = tmp_path_factory.mktemp("exposure")
    history = folder / "history.db"
    soak = start_soak(
        folder,
        f"--api-token {SECRETS['command']} --exit-after 4 --exit-code 3 "
        f"--last-words 'password={SECRETS['log']}' --last-words 'echo of env {SECRETS['environment']}' --last-words "
        f"'{SCRIPT}'",
        target={"url": f"ws://bob:{SECRETS['userinfo']}@127.0.0.1:{{port}}/chat?access_token={SECRETS['url']}&room=1"},
        load={"users": 5, "spawn_rate": 5, "think": "0.1s"},
        env={"SOAK_TEST_SECRET": SECRETS["environment"], "SOAK_HISTORY": str(history)},
    )
    code, stdout, stderr = soak.wait(timeout=180)
    yield soak, code, stdout, stderr, history
    assert_nothing_left(soak)


def _outputs(out: Path) -> dict[str, str]:
    files = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name != "target.log":
            files[str(path.relative_to(out))] = path.read_bytes().decode("utf-8", errors="replace")
    return files


def test_the_run_is_judged_as_a_crash(exposed_run):
    soak, code, stdout, stderr, _ = exposed_run
    assert code == 3, stdout + stderr
    assert soak.summary()["target"]["crashed"] is True


def test_no_secret_in_any_output_file_nor_the_terminal(exposed_run):
    soak, code, stdout, stderr, history = exposed_run
    outputs = _outputs(soak.out)
    assert {"summary.json", "report.html", "meta.json", "run.json"} <= set(outputs)
    outputs["terminal"] = stdout + stderr
    assert history.exists()
    with sqlite3.connect(history) as db:
        for (table,) in db.execute("select name from sqlite_master where type='table'"):
            outputs[f"history:{table}"] = json.dumps(db.execute(f"select * from {table}").fetchall())
    assert any(name.startswith("history:") for name in outputs)
    leaks = [(name, kind) for name, text in outputs.items() for kind, secret in SECRETS.items() if secret in text]
    assert not leaks, leaks
    # ... while the target's own log keeps its raw words (it is the target's output, not ours)
    raw = (soak.out / "target.log").read_text()
    assert SECRETS["log"] in raw


def test_outside_text_is_escaped_in_the_report(exposed_run):
    soak, *_ = exposed_run
    report = (soak.out / "report.html").read_text(encoding="utf-8")
    assert "alert(" in report  # the target's last words are shown ...
    assert SCRIPT not in report  # ... as text, never as markup
    assert "&lt;script&gt;" in report
    summary = soak.summary()
    assert any(SCRIPT in line for line in summary["target"]["log_tail"])  # JSON keeps the text as it was
