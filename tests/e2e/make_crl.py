"""Write a CRL signed with OTS's CA key (ca/ca-do-not-share.key, password atakatak), as an
operator of OTS's CA would publish one: tests/e2e/ots-up makes an empty one for takgate's CoT
listener. Runs with any Python that has `cryptography` (OTS's venv has it).

    make_crl.py --ca-dir OTS_DATA_FOLDER/ca --out FILE [--revoke CERT.pem ...]
"""

import argparse
import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

p = argparse.ArgumentParser()
p.add_argument("--ca-dir", required=True)
p.add_argument("--out", required=True)
p.add_argument("--revoke", nargs="*", default=[])
p.add_argument("--password", default="atakatak")
args = p.parse_args()

with open(os.path.join(args.ca_dir, "ca.pem"), "rb") as f:
    ca = x509.load_pem_x509_certificate(f.read())
with open(os.path.join(args.ca_dir, "ca-do-not-share.key"), "rb") as f:
    key = serialization.load_pem_private_key(f.read(), args.password.encode())
now = datetime.datetime.now(datetime.timezone.utc)
b = (
    x509.CertificateRevocationListBuilder()
    .issuer_name(ca.subject)
    .last_update(now - datetime.timedelta(minutes=1))
    .next_update(now + datetime.timedelta(days=7))
    .add_extension(x509.CRLNumber(1), critical=False)
)
for path in args.revoke:
    with open(path, "rb") as f:
        serial = x509.load_pem_x509_certificate(f.read()).serial_number
    b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
crl = b.sign(key, hashes.SHA256())
tmp = args.out + ".tmp"
with open(tmp, "wb") as f:
    f.write(crl.public_bytes(serialization.Encoding.PEM))
os.replace(tmp, args.out)
print("wrote", args.out)
