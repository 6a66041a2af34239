"""The local disk and the store as a new user meets them: a mistyped store path
creates nothing, a store wiped and re-created has a way back, and the store and
key options go before or after the command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.vault.conftest import assert_one_line_error, run_csfs


def ok(env: dict[str, str], *args: str) -> str:
    r = run_csfs(*args, env=env)
    assert r.returncode == 0, (args, r.stderr)
    assert "Traceback" not in r.stderr
    return r.stdout + r.stderr


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_read_only_commands_create_no_store_folder(cli_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    ok(cli_env, "init", "--store", str(tmp_path / "real"))
    typo = tmp_path / "reall" / "vault" / "deeper"
    env = {**cli_env, "CSFS_STORE": str(typo)}
    before = tree(tmp_path)
    out = tmp_path / "out"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for args in (["ls"], ["ls", "-l", "/x"], ["cat", "/x"], ["get", "/x", str(out)],
                 ["fsck"], ["fsck", "--repair"], ["shares"], ["log"], ["member", "ls"],
                 ["rm", "/x"], ["mkdir", "/x"], ["mv", "/x", "/y"],
                 ["mount", str(mnt), "--cache-dir", str(tmp_path / "cache")]):
        r = run_csfs(*args, env=env)
        assert_one_line_error(r, 8)
        assert f"no csfs vault at file://{typo}" in r.stderr, (args, r.stderr)
        assert "csfs init" in r.stderr
        assert tree(tmp_path) == sorted([*before, "mnt"]), args
    assert not (tmp_path / "reall").exists()
    # The default cache folder is not made either.
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg-cache")
    assert_one_line_error(run_csfs("mount", str(mnt), env=env), 8)
    assert not (tmp_path / "xdg-cache").exists()
    # init makes the whole chain, as it always did.
    ok(env, "init")
    assert typo.is_dir() and (os.stat(typo).st_mode & 0o777) == 0o700
    assert ok(env, "ls") == ""


def test_options_before_the_command(cli_env: dict[str, str], tmp_path: Path) -> None:
    store_a, store_b = str(tmp_path / "a"), str(tmp_path / "b")
    env = {k: v for k, v in cli_env.items() if k not in ("CSFS_KEY", "CSFS_STORE")}
    key = cli_env["CSFS_KEY"]
    ok(env, "--key", key, "--store", store_a, "init")
    ok(env, "--store", store_b, "--key", key, "init")
    (tmp_path / "f").write_bytes(b"in a")
    ok(env, "--key", key, "--store", store_a, "put", str(tmp_path / "f"), "/only-in-a")
    assert ok(env, "--key", key, "--store", store_a, "ls", "/") == "only-in-a\n"
    # After the command wins over before it.
    assert ok(env, "--key", key, "--store", store_a, "ls", "--store", store_b) == ""
    # ...and over the environment, while the environment still fills in what is not given.
    assert ok({**env, "CSFS_STORE": store_b}, "--key", key, "--store", store_a, "ls") == (
        "only-in-a\n")
    assert ok({**env, "CSFS_STORE": store_a, "CSFS_KEY": key}, "ls") == "only-in-a\n"
    # Nested commands and the other store options too.
    assert "owner" in ok(env, "--key", key, "--store", store_a, "member", "ls")
    assert "owner" in ok(env, "--key", key, "--store", store_a, "--endpoint-url",
                         "http://unused.invalid", "member", "ls")
    other = tmp_path / "other"
    from csfs.crypto import generate_identity, save_identity
    save_identity(generate_identity(), str(other), "o", None)
    fresh = {**env, "XDG_STATE_HOME": str(tmp_path / "fresh-state")}
    r = run_csfs("--key", str(other / "o_private_key.pem"), "ls", "--store", store_a, env=fresh)
    assert_one_line_error(r, 4)  # the group's --key was used: a key that does not own it
    assert "not trusted" in r.stderr
    r = run_csfs("--key", str(other / "o_private_key.pem"), "--trust-owner",
                 key.replace("_private_key.pem", "_public_key.pem"), "ls", "--store", store_a,
                 env=fresh)
    assert_one_line_error(r, 5)  # trusted now (the group's --trust-owner), but not a reader
    # A key file given as --key before `pubkey`, a command without a store.
    assert "BEGIN PUBLIC KEY" in ok(env, "--key", key, "pubkey")


@pytest.mark.parametrize("backend", ["local", "moto"])
def test_recreated_store_has_a_way_back(backend: str, cli_env: dict[str, str], tmp_path: Path,
                                        request: pytest.FixtureRequest) -> None:
    """The trap: the bucket was wiped and re-created; `csfs init` used to fail with
    'header changed ... do not trust this store' and leave a half-made vault."""
    store = tmp_path / "store"
    env = {**cli_env, "CSFS_STORE": str(store)}
    if backend == "moto":
        env = dict(request.getfixturevalue("moto_cli_env"))
    ok(env, "init")
    (tmp_path / "f").write_bytes(b"old")
    ok(env, "put", str(tmp_path / "f"), "/old")
    wipe(env)
    # init refuses, writes nothing, and says what to do
    r = run_csfs("init", env=env)
    assert_one_line_error(r, 2)
    assert "remembers another vault" in r.stderr and "--replace-pin" in r.stderr
    assert "forget-store" in r.stderr
    assert objects(env) == []
    # the deliberate way: init --replace-pin
    ok(env, "init", "--replace-pin")
    assert ok(env, "ls") == ""
    ok(env, "put", str(tmp_path / "f"), "/new")
    assert ok(env, "cat", "/new") == "old"
    # --replace-pin never replaces a vault that exists
    r = run_csfs("init", "--replace-pin", env=env)
    assert_one_line_error(r, 2)
    assert "already exists" in r.stderr
    assert ok(env, "ls") == "new\n"


def wipe(env: dict[str, str]) -> None:
    """Delete the store and create it again, empty, as its owner might."""
    url = env["CSFS_STORE"]
    if not url.startswith("s3://"):
        import shutil
        shutil.rmtree(url)
        return
    from tests.servers import DUMMY_ENV, _admin_client
    s3 = _admin_client(env["AWS_ENDPOINT_URL"], DUMMY_ENV["AWS_ACCESS_KEY_ID"],
                       DUMMY_ENV["AWS_SECRET_ACCESS_KEY"])
    bucket = url[len("s3://"):]
    for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=o["Key"])
    s3.delete_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=bucket)


def objects(env: dict[str, str]) -> list[str]:
    from csfs.store import open_store
    store = open_store(env["CSFS_STORE"], endpoint_url=env.get("AWS_ENDPOINT_URL"),
                       path_style=True)
    return [o.key for o in store.list()]


def test_header_changed_hint_names_forget_store(cli_env: dict[str, str],
                                                tmp_path: Path) -> None:
    """Someone else re-created the store: the error's hint names forget-store, which
    forgets the pin (and floors, and access state), and the vault opens as a new one."""
    from csfs.crypto import generate_identity, save_identity

    store = tmp_path / "store"
    env = {**cli_env, "CSFS_STORE": str(store)}
    ok(env, "init")
    other_key, other_pub = save_identity(generate_identity(), str(tmp_path / "k2"), "o", None)
    other = {**env, "CSFS_KEY": other_key, "XDG_STATE_HOME": str(tmp_path / "other-state")}
    import shutil
    shutil.rmtree(store)
    mine = env["CSFS_KEY"].replace("_private_key.pem", "_public_key.pem")
    ok(other, "init", "--reader", mine)  # a new vault, another owner, same URL
    r = run_csfs("ls", env=env)
    assert_one_line_error(r, 4)
    assert "header changed" in r.stderr
    assert f"csfs forget-store --store file://{store}" in r.stderr
    # The mount says the same, hint and exit code included.
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run_csfs("mount", str(mnt), "--cache-dir", str(tmp_path / "cache"), env=env)
    assert_one_line_error(r, 4)
    assert "header changed" in r.stderr and "csfs forget-store" in r.stderr
    state_files = list((tmp_path / "cli-state" / "csfs" / "vaults").iterdir())
    assert len(state_files) == 1
    assert "forgot" in ok(env, "forget-store", "--store", f"file://{store}")
    assert not state_files[0].exists()
    assert "nothing remembered" in ok(env, "forget-store")  # the same store, by its path
    # Now it is a first open: the new owner must be trusted explicitly.
    r = run_csfs("ls", env=env)
    assert_one_line_error(r, 4)
    assert "trust" in r.stderr
    assert ok(env, "ls", "--trust-owner", other_pub) == ""
