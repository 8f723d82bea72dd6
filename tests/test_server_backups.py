"""A restore reads backup.json as untrusted input; a backup is written private."""

from __future__ import annotations

import json
import stat

import pytest

from xlinfluence.errors import ConfigError
from xlinfluence.server.backups import make_private_folder, read_manifest, write_private

KNOWN = ("mlflow", "mlflow_auth")


def _backup(root, manifest: dict, dumps=("mlflow",)):
    make_private_folder(root)
    write_private(root / "backup.json", json.dumps(manifest).encode())
    for name in dumps:
        write_private(root / f"{name}.dump", b"PGDMP")
    (root / "artifacts").mkdir()
    return root


def test_a_backup_is_private_to_its_owner(tmp_path):
    root = _backup(tmp_path / "b", {"databases": ["mlflow"], "auth": False})
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for name in ("backup.json", "mlflow.dump"):
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o600


def test_a_well_formed_backup_is_read(tmp_path):
    plain = _backup(tmp_path / "plain", {"databases": ["mlflow"], "auth": False})
    assert read_manifest(plain, KNOWN) == {"databases": ["mlflow"], "auth": False}
    both = {"databases": ["mlflow", "mlflow_auth"], "auth": True}
    assert read_manifest(_backup(tmp_path / "auth", both, KNOWN), KNOWN) == both


@pytest.mark.parametrize(
    ("manifest", "said"),
    [
        ({"databases": ["mlflow", "x'; DROP DATABASE mlflow; --"], "auth": False}, "never writes"),
        ({"databases": ["mlflow", "../../etc/passwd"], "auth": True}, "never writes"),
        ({"databases": ["mlflow", "mlflow"], "auth": False}, "never writes"),
        ({"databases": ["mlflow_auth"], "auth": True}, "starting with 'mlflow'"),
        ({"databases": "mlflow", "auth": False}, "starting with 'mlflow'"),
        ({"databases": ["mlflow"], "auth": "yes"}, "true/false 'auth'"),
        ({"databases": ["mlflow"], "auth": True}, "says auth=True"),
    ],
)
def test_names_a_server_never_writes_are_refused(tmp_path, manifest, said):
    root = _backup(tmp_path / "b", manifest)
    with pytest.raises(ConfigError, match=said):
        read_manifest(root, KNOWN)


def test_a_dump_that_is_a_link_or_missing_is_refused(tmp_path):
    root = _backup(tmp_path / "b", {"databases": ["mlflow"], "auth": False}, dumps=())
    with pytest.raises(ConfigError, match="mlflow.dump is missing, or a link"):
        read_manifest(root, KNOWN)
    outside = tmp_path / "elsewhere.dump"
    outside.write_bytes(b"PGDMP")
    (root / "mlflow.dump").symlink_to(outside)
    with pytest.raises(ConfigError, match="mlflow.dump is missing, or a link"):
        read_manifest(root, KNOWN)


def test_a_backup_others_can_write_is_refused(tmp_path):
    root = _backup(tmp_path / "b", {"databases": ["mlflow"], "auth": False})
    (root / "mlflow.dump").chmod(0o666)
    with pytest.raises(
        ConfigError, match=r"mlflow.dump can be written by other users .*chmod -R go-w"
    ):
        read_manifest(root, KNOWN)
    (root / "mlflow.dump").chmod(0o600)
    root.chmod(0o777)
    with pytest.raises(ConfigError, match="can be written by other users"):
        read_manifest(root, KNOWN)


def test_a_folder_without_a_manifest_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="backup.json is missing"):
        read_manifest(tmp_path, KNOWN)
    (tmp_path / "backup.json").write_text("{not json")
    (tmp_path / "backup.json").chmod(0o600)
    with pytest.raises(ConfigError, match="cannot be read"):
        read_manifest(tmp_path, KNOWN)
