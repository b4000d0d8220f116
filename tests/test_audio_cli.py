"""`loa audio add / list / show` as a user runs them (a subprocess, SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

from audio.store import asset_path
from tests.audiosignals import make, measure, truncated
from tests.clirun import loa_env, run_loa


def test_add_list_show_and_a_refused_file(db_url: str, tmp_path: Path) -> None:
    env = loa_env(db_url, tmp_path)
    main = make(tmp_path / "ban-tin.flac", "speech", seconds=5, lufs=-35, lead_silence=1)
    intro = make(tmp_path / "nhac-hieu.wav", "tone", seconds=1, lufs=-12)

    added = run_loa("audio", "add", str(main), "--name", "Bản tin", "--intro", str(intro), env=env)
    assert "added 'Bản tin'" in added.stdout
    assert "ms of silence trimmed" in added.stdout and "LUFS" in added.stdout
    again = run_loa(
        "audio", "add", str(main), "--name", "Bản tin", "--intro", str(intro), "--json", env=env
    )
    record = json.loads(again.stdout)
    assert record["created"] is False and record["intro_filename"] == "nhac-hieu.wav"
    path = asset_path(tmp_path, record["sha256"])
    after = measure(path)
    assert abs(after.integrated_lufs + 16) <= 1 and after.true_peak_dbtp <= -1

    listed = run_loa("audio", "list", env=env)
    assert record["sha256"][:16] in listed.stdout and "Bản tin" in listed.stdout
    shown = json.loads(run_loa("audio", "show", record["sha256"], env=env).stdout)
    assert shown["path"] == str(path) and shown["bytes"] == path.stat().st_size

    cut = truncated(
        make(tmp_path / "whole.mp3", "speech", seconds=6, lufs=-20), tmp_path / "cut.mp3"
    )
    failed = run_loa("audio", "add", str(cut), env=env, check=False)
    assert failed.returncode == 1
    assert "cut.mp3: the MP3 file is truncated" in failed.stderr
    assert "Traceback" not in failed.stderr
    missing = run_loa("audio", "show", "0" * 64, env=env, check=False)
    assert missing.returncode == 1 and "no audio asset" in missing.stderr
    assert len(list((tmp_path / "audio").rglob("*.mp3"))) == 1
