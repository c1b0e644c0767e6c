"""Write OTS's config.yml before any OTS process starts (init container, stock OTS image).

OTS reads $OTS_DATA_FOLDER/config.yml over its built-in defaults, and creates the file with
fresh random secrets when it is missing (each of its three processes races to do so). This
script writes it first, every start:

- keys it manages come from the environment (ConfigMap ots-settings) and from the files of
  Secret ots-secrets (mounted at $OTS_SECRETS_DIR), so SECRET_KEY, the password salt and the
  TOTP secret stay the same across restarts and users stay logged in;
- OTS_CA_PASSWORD (the password of OTS's CA key ca/ca-do-not-share.key, which takgate also
  reads from the same Secret to sign re-originated connections) comes from the Secret too. If
  the CA key already exists, the password must open it (checked with `openssl pkey`, which the
  OTS image ships): otherwise OTS could sign no certificate and takgate would not start, so the
  pod stops here with a message naming the fix;
- every other key already in the file (set through the UI or by hand) is kept.

Run it with --check FILE to print what it would write without a data folder (used by tests).
"""

import os
import subprocess
import sys
import tempfile
import urllib.parse

import yaml

SECRET_KEYS = {
    # config.yml key: file in the Secret
    "SECRET_KEY": "secret-key",
    "SECURITY_PASSWORD_SALT": "security-password-salt",
    "OTS_CA_PASSWORD": "ca-password",
}
# OTS passes OTS_CA_PASSWORD to openssl through a shell (`-passout pass:...`, shell=True):
# anything beyond these characters would break or be interpreted by the shell.
CA_PASSWORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-=@%,:")
INT_KEYS = (
    "OTS_LISTENER_PORT",
    "OTS_TCP_STREAMING_PORT",
    "OTS_SSL_STREAMING_PORT",
    "OTS_MARTI_HTTPS_PORT",
)
STR_KEYS = ("OTS_RABBITMQ_SERVER_ADDRESS", "OTS_LISTENER_ADDRESS")
# OTS_MEDIAMTX_ENABLE: OTS's default is on, and then its API talks to a MediaMTX this pod does
# not run; off unless a MediaMTX is deployed beside it.
BOOL_KEYS = ("OTS_MEDIAMTX_ENABLE",)


def need_env(name):
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"write_config: environment variable {name} is not set")
    return value


def read_secret(secrets_dir, name):
    path = os.path.join(secrets_dir, name)
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as e:
        sys.exit(f"write_config: cannot read secret {path}: {e}")
    if not value:
        sys.exit(f"write_config: secret {path} is empty")
    return value


def managed(secrets_dir):
    conf = {key: read_secret(secrets_dir, f) for key, f in SECRET_KEYS.items()}
    conf["SECURITY_TOTP_SECRETS"] = {1: read_secret(secrets_dir, "security-totp-secret")}
    conf["OTS_NODE_ID"] = read_secret(secrets_dir, "node-id")
    password = urllib.parse.quote(read_secret(secrets_dir, "postgres-password"), safe="")
    user = urllib.parse.quote(need_env("OTS_DB_USER"), safe="")
    conf["SQLALCHEMY_DATABASE_URI"] = (
        f"postgresql+psycopg://{user}:{password}@{need_env('OTS_DB_HOST')}/{need_env('OTS_DB_NAME')}"
    )
    if not set(conf["OTS_CA_PASSWORD"]) <= CA_PASSWORD_CHARS:
        sys.exit(
            "write_config: secret ca-password has characters OTS cannot pass to openssl "
            "(it uses a shell); use letters, digits and ._+-=@%,: only"
        )
    for key in STR_KEYS:
        conf[key] = need_env(key)
    for key in BOOL_KEYS:
        raw = need_env(key).lower()
        if raw not in ("true", "false"):
            sys.exit(f"write_config: {key}={raw!r} is not true or false")
        conf[key] = raw == "true"
    for key in INT_KEYS:
        raw = need_env(key)
        try:
            conf[key] = int(raw)
        except ValueError:
            sys.exit(f"write_config: {key}={raw!r} is not a port number")
    return conf


def check_ca_password(data, secrets_dir):
    """Exit if OTS's CA key exists and the Secret's ca-password does not open it."""
    key = os.path.join(data, "ca", "ca-do-not-share.key")
    if not os.path.exists(key):
        return  # OTS creates the CA, with this password, on its first start
    try:
        r = subprocess.run(
            ["openssl", "pkey", "-in", key, "-noout",
             "-passin", "file:" + os.path.join(secrets_dir, "ca-password")],
            capture_output=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        sys.exit(f"write_config: cannot run openssl to check the CA key's password: {e}")
    if r.returncode != 0:
        sys.exit(
            f"write_config: secret ca-password does not open {key}: set it to the password the "
            "CA was created with (OTS's default is atakatak) with `kubectl -n tak patch secret "
            "ots-secrets`, see deploy/README.md"
        )


def main(argv):
    secrets_dir = os.environ.get("OTS_SECRETS_DIR", "/run/secrets/ots")
    data = need_env("OTS_DATA_FOLDER")
    path = os.path.join(data, "config.yml")
    conf = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
        if loaded is not None and not isinstance(loaded, dict):
            sys.exit(f"write_config: {path} is not a YAML mapping")
        conf = loaded or {}
    updates = managed(secrets_dir)
    changed = sorted(k for k, v in updates.items() if conf.get(k) != v)
    conf.update(updates)
    text = yaml.safe_dump(conf, sort_keys=True)
    if argv[1:2] == ["--check"]:
        sys.stdout.write(text)
        return 0
    check_ca_password(data, secrets_dir)
    os.makedirs(data, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config.yml.", dir=data)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o600)  # it holds the database password and the session key
    os.replace(tmp, path)
    # Key names only: never print the values.
    print(f"write_config: {path} written; changed keys: {', '.join(changed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
