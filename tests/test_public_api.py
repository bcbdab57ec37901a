"""The deliberate public API: the export list, and that importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import runner

EXPECTED = {
    "Analysis",
    "LoadError",
    "MetricResult",
    "Profile",
    "ProfileError",
    "RunError",
    "RunFolderError",
    "RunRecord",
    "SoakError",
    "TargetError",
    "UsageError",
    "Verdict",
    "analyse",
    "finish_run",
    "load_profile",
    "parse_profile",
    "run_soak",
}


def test_export_list():
    assert set(runner.__all__) == EXPECTED


def test_every_export_resolves():
    for name in EXPECTED - {"run_soak"}:  # run_soak imports Locust (gevent patching): checked in a subprocess
        assert getattr(runner, name).__module__.startswith("runner.")


def test_import_is_cheap_and_does_not_patch_for_gevent():
    # gevent itself may be imported by coverage's gevent support in CI; what matters is
    # that nothing heavy is loaded and the standard library is not monkey-patched.
    code = (
        "import sys, runner, runner.targets.echo\n"
        "def patched():\n"
        "    monkey = sys.modules.get('gevent.monkey')\n"
        "    return bool(monkey and monkey.is_module_patched('socket'))\n"
        "heavy = [m for m in ('locust', 'numpy', 'scipy', 'matplotlib', 'jinja2') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert not patched()\n"
        "assert callable(runner.run_soak) and 'locust' in sys.modules and patched()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_export_list_and_lazy_table_agree():
    assert set(runner.__all__) == set(runner._EXPORTS)
