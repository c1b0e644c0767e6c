"""The Marti API on takgate's `marti` listener (OTS's 8443: mutual TLS against OTS's CA, the client
certificate handed to Flask in X-Ssl-Cert), certificate enrollment on the `enroll` listener
(8446), and X-Ssl-Cert spoofing on the plain `web` listener (8080).

The certificate-gated endpoint is /Marti/api/groups/all: OTS re-verifies the X-Ssl-Cert header
against ca.pem and lists the groups of the user named by its CN; without a certificate it answers
400 "Groups are only supported on SSL connections". Each test user is put in a group of its own,
so an answer that lists that group was given for that user."""

from __future__ import annotations

import base64
import ssl
import xml.etree.ElementTree as ET

import pytest

import otslib
from otslib import https, unique

NO_SSL = "Groups are only supported on SSL connections"


@pytest.fixture(scope="module")
def grouped_users(env, admin):
    """Two OTS users with OTS-issued certificates, each alone in a group named after it."""
    users = {}
    for _ in range(2):
        username, cert, key = otslib.new_user_with_cert(admin, env, "e2emarti")
        group = unique("E2EGRP")
        admin.add_group(group)
        admin.add_to_group(username, group, "IN")
        users[username] = {"cert": cert, "key": key, "group": group}
    return users


def group_names(resp) -> set:
    assert resp.status == 200, (resp.status, resp.text[:300])
    return {g["name"] for g in resp.json()["data"]}


def test_version_config_with_client_certificate(env, grouped_users):
    (user, u), *_ = grouped_users.items()
    r = https(env.http_addr("marti"), "GET", "/Marti/api/version/config", env.ca_pem, u["cert"], u["key"])
    assert r.status == 200, (r.status, r.text[:300])
    body = r.json()
    assert body["type"] == "ServerConfig"
    assert body["data"]["version"] == "1.7.14"
    assert body["data"]["api"] == "3"


def test_marti_listener_requires_a_client_certificate(env):
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https(env.http_addr("marti"), "GET", "/Marti/api/version/config", env.ca_pem)


def test_groups_all_answers_for_the_certificate_user(env, grouped_users):
    (a, ua), (b, ub) = grouped_users.items()
    names_a = group_names(
        https(env.http_addr("marti"), "GET", "/Marti/api/groups/all", env.ca_pem, ua["cert"], ua["key"])
    )
    names_b = group_names(
        https(env.http_addr("marti"), "GET", "/Marti/api/groups/all", env.ca_pem, ub["cert"], ub["key"])
    )
    assert ua["group"] in names_a and ub["group"] not in names_a, names_a
    assert ub["group"] in names_b and ua["group"] not in names_b, names_b


def test_marti_listener_overwrites_a_client_supplied_x_ssl_cert(env, grouped_users):
    """B connects with B's certificate and sends A's certificate in X-Ssl-Cert: OTS sees B."""
    (a, ua), (b, ub) = grouped_users.items()
    r = https(
        env.http_addr("marti"),
        "GET",
        "/Marti/api/groups/all",
        env.ca_pem,
        ub["cert"],
        ub["key"],
        headers={"X-Ssl-Cert": otslib.escaped_cert(ua["cert"])},
    )
    names = group_names(r)
    assert ub["group"] in names and ua["group"] not in names, names


def test_spoofed_x_ssl_cert_on_web_listener_is_not_accepted(env, grouped_users):
    (a, ua), *_ = grouped_users.items()
    spoof = {"X-Ssl-Cert": otslib.escaped_cert(ua["cert"])}
    # Control: straight to OTS (no takgate), the same header is accepted as user A. That is the
    # hole OTS's own nginx leaves open on 8080, so the next assertion means something.
    direct = otslib.requests.get(env.ots_api + "/Marti/api/groups/all", headers=spoof, timeout=otslib.T)
    assert direct.status_code == 200 and ua["group"] in {g["name"] for g in direct.json()["data"]}, direct.text[:300]
    # Through takgate's plain web listener: the header is removed, OTS sees no certificate.
    r = otslib.requests.get(env.web + "/Marti/api/groups/all", headers=spoof, timeout=otslib.T)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert r.json()["error"] == NO_SSL
    # Any spelling of the header name.
    r = otslib.requests.get(
        env.web + "/Marti/api/groups/all", headers={"x-ssl-cert": spoof["X-Ssl-Cert"]}, timeout=otslib.T
    )
    assert r.status_code == 400 and r.json()["error"] == NO_SSL


def test_marti_listener_does_not_serve_enrollment(env, grouped_users):
    (a, ua), *_ = grouped_users.items()
    r = https(env.http_addr("marti"), "GET", "/Marti/api/tls/config", env.ca_pem, ua["cert"], ua["key"])
    assert r.status == 404, (r.status, r.text[:300])


def test_certificate_enrollment_through_enroll_listener(env, admin, conns):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.x509.oid import NameOID

    enroll = env.http_addr("enroll")
    # 1. The CSR subject template, no client certificate needed on 8446.
    r = https(enroll, "GET", "/Marti/api/tls/config", env.ca_pem)
    assert r.status == 200, (r.status, r.text[:300])
    entries = {e.get("name"): e.get("value") for e in ET.fromstring(r.body).findall(".//{*}nameEntry")}
    assert set(entries) == {"O", "OU"}, r.text

    # 2. signClient/v2 with Basic auth and a CSR, as ATAK sends it (base64 body without PEM lines).
    password = "E2e-Enr0ll!"
    username = unique("e2eenroll")
    admin.add_user(username, password)
    csr_pem, key = otslib.csr_for(username)
    body = b"".join(line for line in csr_pem.splitlines() if b"-----" not in line)
    uid = unique("ANDROID-e2e-")
    basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    r = https(
        enroll,
        "POST",
        f"/Marti/api/tls/signClient/v2?clientUid={uid}&version=5.4",
        env.ca_pem,
        headers={"Authorization": basic, "Accept": "application/json", "Content-Type": "text/plain"},
        body=body,
    )
    assert r.status == 200, (r.status, r.text[:500])
    signed = r.json()["signedCert"]
    cert = x509.load_pem_x509_certificate(
        b"-----BEGIN CERTIFICATE-----\n" + signed.strip().encode() + b"\n-----END CERTIFICATE-----\n"
    )
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == username
    ca = x509.load_pem_x509_certificate(env.ca_pem.read_bytes())
    ca.public_key().verify(
        cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm
    )

    # Wrong password: refused.
    bad = "Basic " + base64.b64encode(f"{username}:wrong".encode()).decode()
    r = https(
        enroll,
        "POST",
        f"/Marti/api/tls/signClient/v2?clientUid={uid}",
        env.ca_pem,
        headers={"Authorization": bad},
        body=body,
    )
    assert r.status == 401, (r.status, r.text[:300])

    # 3. The enrolled certificate works on the CoT listener (an active user, OTS's CA).
    d = env.run / "enrolled"
    d.mkdir(exist_ok=True)
    cert_path, key_path = d / f"{username}.pem", d / f"{username}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    watcher, _, _ = otslib.registered_conn(lambda: otslib.CotConn.tcp(env.ots_tcp, "watcher"), "WATCH")
    conns.append(watcher)
    conn = otslib.CotConn.tls(env.cot_addr, env.ca_pem, str(cert_path), str(key_path), name="enrolled")
    conns.append(conn)
    otslib.settle_after_connect()  # OTS F3
    sa_uid, sa_cs = unique("E2E-ENR-"), unique("ENR-")
    otslib.relay_until_seen(
        lambda: conn.send(otslib.sa_event(sa_uid, sa_cs)),
        lambda t: watcher.poll_frame(lambda f: sa_uid.encode() in f, t),
        "the enrolled client's SA at OTS",
    )
