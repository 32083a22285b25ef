import pytest

from amp_runtime.config import ConfigError, load_config


def test_defaults_when_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, environ={})
    assert config.server.bind == "127.0.0.1:1610"
    assert config.server.data_dir == "./data"
    assert [w.id for w in config.workers] == ["worker-01"]
    assert config.workers[0].slots == 10


def test_precedence_flag_over_env_over_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[server]\nbind = "127.0.0.1:1"\ndata_dir = "file"\n[http]\nmax_body_bytes = 10\n')
    env = {"AMP_SERVER_BIND": "127.0.0.1:2", "AMP_HTTP_MAX_BODY_BYTES": "20", "AMP_AUTH_API_KEY": "k"}
    config = load_config(path, environ=env, overrides={"server": {"bind": "127.0.0.1:3"}})
    assert config.server.bind == "127.0.0.1:3"
    assert config.server.data_dir == "file"
    assert config.http.max_body_bytes == 20
    assert config.auth.api_key == "k"


def test_unknown_key_is_named_with_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[http]\nmax_body_byte = 10\n")
    with pytest.raises(ConfigError, match=r"c\.toml.*http\.max_body_byte: unknown key"):
        load_config(path, environ={})


def test_wrong_type_from_env_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="AMP_HTTP_MAX_BODY_BYTES"):
        load_config(None, environ={"AMP_HTTP_MAX_BODY_BYTES": "lots"})


def test_shipped_config_toml_has_every_key_and_loads(tmp_path):
    from pathlib import Path

    import tomllib

    from amp_runtime.config import Config

    shipped = Path(__file__).parents[2] / "config.toml"
    config = load_config(shipped, environ={})
    data = tomllib.loads(shipped.read_text())
    for section, typ in ((f.name, f.type) for f in __import__("msgspec").structs.fields(Config)):
        if section == "workers":
            assert data["workers"], "config.toml lists the default worker"
            continue
        for key in typ.__struct_fields__:
            assert key in data.get(section, {}), f"config.toml lacks {section}.{key}"
    # Relative function paths come back absolute, from the config file's directory.
    assert config.functions.paths == [str(shipped.parent)]
    config.functions.paths = Config().functions.paths
    assert config == Config(), "config.toml holds exactly the defaults"


def test_store_url_from_env_selects_postgresql():
    config = load_config(None, environ={"AMP_STORE_URL": "postgresql://amp:s3cret@db:5432/amp"})
    assert config.store.url == "postgresql://amp:s3cret@db:5432/amp"
    assert load_config(None, environ={}).store.url == ""  # default: the DuckDB file in data_dir


def test_a_bad_store_url_is_refused_without_echoing_it():
    with pytest.raises(ConfigError, match="store.url") as caught:
        load_config(None, environ={"AMP_STORE_URL": "mysql://amp:s3cret@db/amp"})
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("url, shown", [
    ("postgresql://amp:s3cret@db:5432/amp", "postgresql://amp:***@db:5432/amp"),
    ("postgresql://amp@db/amp?sslmode=require&password=s3cret", "postgresql://amp@db/amp?sslmode=require&password=***"),
    ("postgresql://127.0.0.1:5432/amp", "postgresql://127.0.0.1:5432/amp"),
])
def test_masked_url_hides_the_password(url, shown):
    from amp_runtime.core.secrets import masked_url

    assert masked_url(url) == shown


def test_store_reconnect_s_defaults_to_forever_and_must_not_be_negative():
    assert load_config(None, environ={}).store.reconnect_s == 0.0
    assert load_config(None, environ={"AMP_STORE_RECONNECT_S": "5"}).store.reconnect_s == 5.0
    with pytest.raises(ConfigError, match="store.reconnect_s: must not be negative"):
        load_config(None, environ={"AMP_STORE_RECONNECT_S": "-1"})


@pytest.mark.parametrize("bind", ["0.0.0.0:1610", "[::]:1610"])
def test_a_peer_listening_on_every_address_must_say_where_the_other_peers_reach_it(bind):
    # It would advertise http://0.0.0.0:port in the peer directory and the durable leases: a peer
    # on another host dialling that reaches itself, never this one.
    pg = {"AMP_STORE_URL": "postgresql://amp@db/amp", "AMP_SERVER_BIND": bind}
    with pytest.raises(ConfigError, match="cluster.advertise_url: required"):
        load_config(None, environ=pg)
    assert load_config(None, environ={**pg, "AMP_CLUSTER_ADVERTISE_URL": "http://10.0.0.5:1610"})
    assert load_config(None, environ={"AMP_SERVER_BIND": bind}).server.bind == bind  # one process: no peers


def test_an_https_advertise_url_is_refused_since_peers_talk_plain_http():
    with pytest.raises(ConfigError, match="cluster.advertise_url: an http:// base URL"):
        load_config(None, environ={"AMP_CLUSTER_ADVERTISE_URL": "https://peer-a.internal:1610"})


@pytest.mark.parametrize("env, problem", [
    ({"AMP_REGISTRY_HEARTBEAT_S": "0"}, "registry.heartbeat_s: must be positive"),
    ({"AMP_REGISTRY_HEARTBEAT_S": "-1"}, "registry.heartbeat_s: must be positive"),
    ({"AMP_REGISTRY_EXPIRY_CHECK_S": "0"}, "registry.expiry_check_s: must be positive"),
    ({"AMP_TASKS_DEFAULT_TIMEOUT_S": "0"}, "tasks.default_timeout_s: must be positive"),
    ({"AMP_TASKS_DEFAULT_TIMEOUT_S": "-5"}, "tasks.default_timeout_s: must be positive"),
])
def test_timings_that_cannot_work_are_refused(env, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config(None, environ=env)
