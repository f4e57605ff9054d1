"""Settings validation and the CLI's error messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scrm.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_embedded_sqlite_setup():
    s = load_settings(env={})
    assert s.database.url.startswith("sqlite+aiosqlite://") and s.redis.url is None
    assert s.display.timezone == "Asia/Shanghai" and s.server.max_body_bytes == 1048576


def test_env_overrides_config_file(tmp_path):
    cfg = tmp_path / "my.toml"
    cfg.write_text('[server]\nport = 9001\n[redis]\nurl = "redis://cache:6379/0"\n')
    s = load_settings(cfg, env={"SCRM_SERVER_PORT": "9002"})
    assert s.server.port == 9002 and s.redis.url == "redis://cache:6379/0"


@pytest.mark.parametrize("env,key", [
    ({"SCRM_SERVER_PORT": "eighty"}, "server.port [SCRM_SERVER_PORT]"),
    ({"SCRM_DATABASE_URL": "mysql://x"}, "database.url"),
    ({"SCRM_DISPLAY_TIMEZONE": "Mars/Olympus"}, "display.timezone"),
    ({"SCRM_SERVER_PUBLIC_URL": "crm.example.com"}, "server.public_url"),
    ({"SCRM_WORKER_SEND_TIMEOUT": "100"}, "worker"),
    ({"SCRM_WORKER_NICE": "-5"}, "worker.nice [SCRM_WORKER_NICE]"),
])
def test_bad_values_name_the_key(env, key):
    with pytest.raises(SettingsError) as err:
        load_settings(env=env)
    assert key in str(err.value)


def test_unknown_key_in_config_file_is_refused(tmp_path):
    cfg = tmp_path / "typo.toml"
    cfg.write_text("[server]\nprot = 1\n")
    with pytest.raises(SettingsError, match="server.prot"):
        load_settings(cfg, env={})


def test_broken_toml_and_missing_file_are_clear(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(bad, env={})
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.toml", env={})


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("SCRM_")}
    return subprocess.run([sys.executable, "-m", "scrm.cli", *args], cwd=ROOT, env=base | (env or {}),
                          capture_output=True, text=True, timeout=60)


def test_cli_bad_setting_exits_2_with_the_key():
    res = _cli("serve", env={"SCRM_SERVER_PORT": "99999"})
    assert res.returncode == 2 and "server.port" in res.stderr and "Traceback" not in res.stderr


def test_cli_bad_arguments_exit_2():
    res = _cli("serve", "--port", "abc")
    assert res.returncode == 2 and "invalid int value" in res.stderr
    res = _cli("launch-rockets")
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_cli_migrate_and_create_admin(tmp_path):
    env = {"SCRM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db", "SCRM_STORAGE_PATH": str(tmp_path)}
    assert _cli("migrate", env=env).returncode == 0
    ok = _cli("create-admin", "--login", "boss", "--password", "long-enough-pw", env=env)
    assert ok.returncode == 0 and "created admin 'boss'" in ok.stdout
    short = _cli("create-admin", "--login", "b2", "--password", "short", env=env)
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    dup = _cli("create-admin", "--login", "boss", "--password", "long-enough-pw", env=env)
    assert dup.returncode == 1 and "taken" in dup.stderr


def test_worker_yields_the_cpu_to_serve_by_its_configured_niceness():
    probe = ("import os; from scrm.cli import _lower_priority; from scrm.settings import load_settings; "
             "before = os.nice(0); _lower_priority(load_settings(env={}).worker.nice); print(os.nice(0) - before)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == min(10, 19 - os.nice(0))  # default 10 (capped at 19)
