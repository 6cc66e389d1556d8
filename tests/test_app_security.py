"""No visitor can damage the install, see a secret, or fill the disk: the real app (`python app.py`) through
the official gradio_client.

- Training, aborting, resuming and dataset uploads need the admin secret, checked on the server; without it
  the shipped adapter stays byte for byte what it was and no run folder appears. A public demo
  (CBTCOMPARE_PUBLIC_DEMO=1) refuses them even with the secret.
- Repeated wrong secrets lock the client out, even for the right secret, with the time to wait.
- A rating app serves no admin endpoint at all, and refuses uploads over its limit while still answering.
- A key typed into the Models tab's Connections area never comes back to the client, nor reaches the store
  or the log; the connection is this session's alone; a public demo adds no local file and no endpoint on
  its own network.
- An error shown to a visitor (the Judge tab naming the database) never carries the database password,
  and neither does the server's log.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

from cbtcompare.access import MIN_SECRET_LENGTH

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SECRET = "app-security-admin-secret-0123"
SHIPPED_ADAPTER = REPO / "adapters" / "smollm2-135m-cbt"
SHIPPED_DATASET = "training/data/cbt_synthetic/sessions.jsonl"


def train_form(secret: str | None, *, dataset: str = SHIPPED_DATASET, overwrite: bool = True) -> list[object]:
    """/train_start's inputs: the secret, then the form (preset, dataset, base, name, lr, steps, epochs, seq len,
    LoRA r, alpha, overwrite), aimed at replacing the shipped adapter."""
    return [
        secret,
        "smollm2-135m-cpu",
        dataset,
        "embedded:smollm2",
        SHIPPED_ADAPTER.name,
        2e-4,
        -1,
        1,
        512,
        8,
        16,
        overwrite,
    ]


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_folders(data_dir: Path) -> list[str]:
    runs = data_dir / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def secured_app(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    from fixtures_app import start_app

    data_dir = tmp_path_factory.mktemp("secured-app")
    process, url = start_app(data_dir, {"CBTCOMPARE_ADMIN_SECRET": SECRET})
    yield url, data_dir
    stop(process)


@pytest.fixture(scope="module")
def rating_app(tmp_path_factory) -> Iterator[str]:
    from fixtures_app import start_app

    data_dir = tmp_path_factory.mktemp("rating-app")
    process, url = start_app(data_dir, {"CBTCOMPARE_ADMIN_SECRET": SECRET, "CBTCOMPARE_MODE": "rating"})
    yield url
    stop(process)


# Shared state needs the admin secret ---------------------------------------------------------------------


def test_an_unauthenticated_train_start_cannot_replace_the_shipped_adapter(secured_app):
    url, data_dir = secured_app
    before = tree_digest(SHIPPED_ADAPTER)
    assert before, "the shipped adapter is missing"
    client = Client(url, verbose=False)
    refusals = ((None, "none was given"), ("", "none was given"), ("guess-" + "x" * 20, "Wrong admin secret"))
    for secret, refusal in refusals:
        with pytest.raises(Exception, match=refusal):
            client.predict(*train_form(secret), api_name="/train_start")
    for endpoint in ("/train_abort", "/train_resume"):
        with pytest.raises(Exception, match="Wrong admin secret"):
            client.predict("not-the-secret-at-all", api_name=endpoint)
    dataset = data_dir / "visitor.jsonl"
    dataset.write_text('{"id": "x", "messages": []}\n')
    with pytest.raises(Exception, match="Wrong admin secret"):
        client.predict("not-the-secret-at-all", handle_file(str(dataset)), api_name="/train_upload")
    assert run_folders(data_dir) == []
    assert not (data_dir / "uploads" / "datasets").exists()
    assert tree_digest(SHIPPED_ADAPTER) == before
    assert not list((REPO / "adapters").glob(f".*{SHIPPED_ADAPTER.name}*"))  # no staging or replaced folder


def test_the_right_secret_gets_past_the_gate_to_the_ordinary_checks(secured_app, tmp_path):
    url, data_dir = secured_app
    client = Client(url, verbose=False)
    missing = str(tmp_path / "missing.jsonl")
    with pytest.raises(Exception, match="does not exist"):
        client.predict(*train_form(SECRET, dataset=missing), api_name="/train_start")
    with pytest.raises(Exception, match="No run selected"):
        client.predict(SECRET, api_name="/train_abort")
    assert run_folders(data_dir) == []


def test_an_upload_over_the_limit_is_refused_and_the_server_still_answers(secured_app, tmp_path):
    from cbtcompare.limits import DEFAULT_LIMITS

    url, data_dir = secured_app
    big = tmp_path / "big.jsonl"
    with big.open("wb") as out:
        out.truncate(DEFAULT_LIMITS.max_bytes + 1)
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="(?i)size"):
        client.predict(SECRET, handle_file(str(big)), api_name="/train_upload")
    assert not (data_dir / "uploads" / "datasets").exists()
    assert Client(url, verbose=False).predict(api_name="/models")  # still serving


@pytest.fixture(scope="module")
def demo_app(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    from fixtures_app import start_app

    data_dir = tmp_path_factory.mktemp("demo-app")
    process, url = start_app(data_dir, {"CBTCOMPARE_ADMIN_SECRET": SECRET, "CBTCOMPARE_PUBLIC_DEMO": "1"})
    yield url, data_dir
    stop(process)


def test_a_public_demo_refuses_every_write_even_with_the_secret(demo_app):
    url, data_dir = demo_app
    before = tree_digest(SHIPPED_ADAPTER)
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="public demo"):
        client.predict(*train_form(SECRET), api_name="/train_start")
    for endpoint in ("/train_abort", "/train_resume", "/rate_admin_studies"):
        with pytest.raises(Exception, match="public demo"):
            client.predict(SECRET, api_name=endpoint)
    assert run_folders(data_dir) == [] and tree_digest(SHIPPED_ADAPTER) == before
    assert client.predict(api_name="/models")  # reading still works


def test_a_public_demo_adds_no_local_file_or_own_network_connection(demo_app):
    url, _ = demo_app
    client = Client(url, verbose=False)
    from cbtcompare.models.defaults import default_gguf_path

    result, key_box, mine, *_ = client.predict(
        "gguf", "local-gguf", str(default_gguf_path()), "", "", api_name="/connections_add"
    )
    assert "Not added" in result and "local files cannot be added" in result and key_box == ""
    assert "local-gguf" not in str(mine)
    result, *_ = client.predict("openai", "inside", "m", "http://127.0.0.1:8000/v1", "", api_name="/connections_add")
    assert "Not added" in result and "public demo does not connect" in result
    assert "local-gguf" not in str(client.predict(api_name="/models"))


# Connections: a key typed into the Models tab --------------------------------------------------------------


def test_a_connection_key_never_comes_back_nor_reaches_the_store_or_the_log(
    app_url, app_data_dir, llama_server, monkeypatch
):
    from test_rate_app import recording

    with recording(monkeypatch) as recorder:
        client = Client(app_url, verbose=False)
        result, key_box, mine, *_ = client.predict(
            "openai", "keyed-server", "local", llama_server.base_url, llama_server.api_key,
            api_name="/connections_add",
        )  # fmt: skip
        assert "keyed-server answered" in result and key_box == ""
        assert "keyed-server" in str(mine)
        assert "keyed-server" in str(client.predict(api_name="/models")), "this session sees its connection"
        assert "keyed-server" not in str(Client(app_url, verbose=False).predict(api_name="/models")), "others do not"
        wrong, *_ = client.predict(
            "openai", "keyed-wrong", "local", llama_server.base_url, llama_server.api_key + "x",
            api_name="/connections_add",
        )  # fmt: skip
        assert "test failed" in wrong
        received = recorder.text()
    assert "keyed-server" in received, "the recorder saw the app's answers"
    assert llama_server.api_key not in received
    for path in app_data_dir.rglob("*"):
        if path.is_file():
            assert llama_server.api_key.encode() not in path.read_bytes(), f"the key reached {path}"


# The rating app: raters only -----------------------------------------------------------------------------


def test_the_rating_app_serves_no_admin_endpoint(rating_app):
    client = Client(rating_app, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert "/rate_start" in endpoints
    assert not [name for name in endpoints if "admin" in name or name.startswith("/train")]
    page = httpx.get(rating_app, timeout=30).text
    assert "rate-admin" not in page and "Admin secret" not in page


def test_the_rating_app_refuses_big_uploads_and_never_serves_them_back(rating_app):
    upload_url = rating_app.rstrip("/") + "/gradio_api/upload"
    big = b"A" * (2 * 1024 * 1024)
    refused = httpx.post(upload_url, files={"files": ("big.txt", big, "text/plain")}, timeout=60)
    assert refused.status_code == 413, refused.text[:300]
    assert "maximum allowed size" in refused.text
    small = httpx.post(upload_url, files={"files": ("small.txt", b"ok", "text/plain")}, timeout=60)
    assert small.status_code == 200  # a limit, not a wall: the route itself still works
    with pytest.raises(Exception, match="(?i)code"):  # and raters are still served
        Client(rating_app, verbose=False).predict("NOT-A-CODE", api_name="/rate_start")


# Secrets in what a visitor sees -----------------------------------------------------------------------------


@dataclass
class PostgresApp:
    url: str
    data_dir: Path
    role: str
    password: str
    admin: Callable[[str], None]  # runs one statement as the server's superuser


@pytest.fixture(scope="module")
def postgres_app(postgres_server, tmp_path_factory) -> Iterator[PostgresApp]:
    """The app on its own PostgreSQL role and database, whose password holds "/" and "+" (as generated
    ones often do)."""
    import psycopg
    from fixtures_app import start_app

    def admin(statement: str) -> None:
        with psycopg.connect(
            host=postgres_server.host,
            port=postgres_server.port,
            user=postgres_server.user,
            password=postgres_server.password,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(statement)

    role = f"app_{secrets.token_hex(4)}"
    password = f"Hunter2/{secrets.token_hex(6)}+pg="
    admin(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    admin(f'CREATE DATABASE "{role}" OWNER {role}')
    db_url = f"postgresql+psycopg://{role}:{password}@{postgres_server.host}:{postgres_server.port}/{role}"
    data_dir = tmp_path_factory.mktemp("postgres-app")
    process, url = start_app(data_dir, {"CBTCOMPARE_DB_URL": db_url, "CBTCOMPARE_ADMIN_SECRET": SECRET})
    yield PostgresApp(url, data_dir, role, password, admin)
    stop(process)


def test_a_judge_tab_error_never_shows_the_database_password(postgres_app):
    app = postgres_app
    client = Client(app.url, verbose=False)
    # The database refuses the app from now on: the Judge tab's error names the database it could not read.
    app.admin(f"ALTER ROLE {app.role} NOLOGIN")
    app.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{app.role}'")
    try:
        with pytest.raises(Exception) as failed:
            client.predict(["some-transcript"], None, "paper", ["smollm2-instruct"], 1, "all", api_name="/judge")
    finally:
        app.admin(f"ALTER ROLE {app.role} LOGIN")
    shown = str(failed.value)
    assert "postgresql" in shown and "***" in shown, shown  # the error still says where
    assert app.password not in shown and "Hunter2" not in shown, shown
    log = (app.data_dir / "app.log").read_text()
    assert app.password not in log and "Hunter2" not in log


def test_repeated_wrong_secrets_lock_the_client_out(postgres_app):
    from cbtcompare.access import AttemptLimits

    url, data_dir = postgres_app.url, postgres_app.data_dir
    client = Client(url, verbose=False)
    for _ in range(AttemptLimits().per_client - 1):
        with pytest.raises(Exception, match="Wrong admin secret"):
            client.predict(*train_form("x" * MIN_SECRET_LENGTH), api_name="/train_start")
    with pytest.raises(Exception, match=r"Too many wrong admin secrets from this client.*try again in \d+ s"):
        client.predict(*train_form("x" * MIN_SECRET_LENGTH), api_name="/train_start")
    with pytest.raises(Exception, match="try again in"):
        client.predict(*train_form(SECRET), api_name="/train_start")  # the right secret waits too
    assert run_folders(data_dir) == []
    assert Client(url, verbose=False).predict(api_name="/models")  # other visitors' reads still answer
