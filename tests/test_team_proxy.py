"""The team server behind a real reverse proxy (nginx on loopback, as docs/team.md's recipe
forwards `Host: mlflow.lab`): MLflow refuses Host headers other than this machine's and
private addresses', so the server answers the proxy only when started with
`--allowed-hosts`; this machine's own clients keep reaching it directly."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from xlinfluence.errors import ConfigError
from xlinfluence.server import TeamServer, free_port
from xlinfluence.server.team import host_names

from .conftest import require_team_server

pytestmark = pytest.mark.slow

NGINX = """
daemon off; worker_processes 1; pid {root}/nginx.pid; error_log {root}/error.log;
events {{}}
http {{
  access_log off; client_max_body_size 0;
  client_body_temp_path {root}/body; proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://127.0.0.1:{upstream}; proxy_set_header Host {name}; }}
  }}
}}
"""


def _proxy(root: Path, upstream: int, name: str) -> tuple[subprocess.Popen, str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).is_file():
        pytest.skip("nginx is not installed here (CI installs nginx-light)")
    port = free_port()
    root.mkdir()
    (root / "nginx.conf").write_text(NGINX.format(root=root, port=port, upstream=upstream,
                                                  name=name))  # fmt: skip
    process = subprocess.Popen([nginx, "-p", str(root), "-c", str(root / "nginx.conf")])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"{url}/health", timeout=2)
            return process, url
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError((root / "error.log").read_text())


def _search(url: str) -> int:
    return requests.get(f"{url}/api/2.0/mlflow/experiments/search",
                        params={"max_results": 1}, timeout=30).status_code  # fmt: skip


def test_the_proxy_is_answered_only_for_the_allowed_host(tmp_path):
    require_team_server()
    root = Path(tempfile.mkdtemp(prefix="xlinfluence-server-", dir="/tmp"))
    root.chmod(0o755)  # PostgreSQL runs as the postgres user when the tests run as root
    team = TeamServer(root)
    state = team.start(allowed_hosts="mlflow.lab")
    proxies = []
    try:
        allowed, url = _proxy(tmp_path / "allowed", state.tracking_port, "mlflow.lab")
        other, other_url = _proxy(tmp_path / "other", state.tracking_port, "other.lab")
        proxies += [allowed, other]
        assert _search(url) == 200
        assert _search(other_url) == 403  # what every proxy met before --allowed-hosts
        client = MlflowClient(url)  # a lab member's client, through the proxy
        run = client.create_run(client.create_experiment("through-the-proxy"))
        client.log_metric(run.info.run_id, "loss", 0.5)
        assert MlflowClient(state.uri).get_run(run.info.run_id).data.metrics == {"loss": 0.5}
    finally:
        for process in proxies:
            process.terminate()
            process.wait(timeout=30)
        team.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_allowed_hosts_are_checked_before_anything_starts(tmp_path):
    assert host_names("mlflow.lab, mlflow.lab:443") == ["mlflow.lab", "mlflow.lab:443"]
    with pytest.raises(ConfigError, match="DNS rebinding"):
        host_names("*")
    with pytest.raises(ConfigError, match=r"\['mlflow lab'\] are not host names"):
        TeamServer(tmp_path / "never").start(allowed_hosts="mlflow lab")
    assert not (tmp_path / "never" / "postgres").exists()
