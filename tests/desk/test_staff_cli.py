"""`./siyu staff`: add (password from the prompt, or SIYU_NEW_STAFF_PASSWORD for scripts), list,
disable; refusals are clear and change nothing."""
from __future__ import annotations

import os
import subprocess

from tests.support import PYTHON, REPO


def staff(tmp_path, *args, password=None):
    env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp_path / 'shop.db'}", SIYU_VAR_DIR=str(tmp_path))
    if password:
        env["SIYU_NEW_STAFF_PASSWORD"] = password
    return subprocess.run([PYTHON, "-m", "bot", "staff", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_add_list_and_disable_staff(tmp_path):
    added = staff(tmp_path, "add", "xiaowang", "--role", "agent", "--display-name", "客服小王",
                  password="一个足够长的密码")
    assert added.returncode == 0, added.stdout + added.stderr
    again = staff(tmp_path, "add", "xiaowang", "--role", "agent", password="another-long-password")
    assert again.returncode == 2 and "已存在" in again.stdout
    short = staff(tmp_path, "add", "xiaoli", "--role", "agent", password="short")
    assert short.returncode == 2 and "至少 8 位" in short.stdout
    listed = staff(tmp_path, "list")
    assert "xiaowang\tagent\t客服小王\taway" in listed.stdout and "xiaoli" not in listed.stdout
    assert staff(tmp_path, "disable", "xiaowang").returncode == 0
    assert "xiaowang\tagent\t客服小王\tdisabled" in staff(tmp_path, "list").stdout
