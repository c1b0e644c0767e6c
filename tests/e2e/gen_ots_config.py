"""Write $OTS_DATA_FOLDER/config.yml once, before any OTS process starts.

Run with the OTS venv's Python (it imports opentakserver.defaultconfig). It dumps
the same keys OTS itself writes on first start (ots-run.md §4), with this run's
environment (fixed secrets, loopback, database) and ports. Without this file,
each of OTS's processes would write its own with random secrets.
"""

import argparse
import os

import yaml
from opentakserver.defaultconfig import DefaultConfig

p = argparse.ArgumentParser()
p.add_argument("--api-port", type=int, required=True)
p.add_argument("--tcp-port", type=int, required=True)
p.add_argument("--ssl-port", type=int, required=True)
p.add_argument("--udp-port", type=int, required=True)
p.add_argument("--marti-https-port", type=int, default=8443)
args = p.parse_args()

conf = {k: v for k, v in DefaultConfig.__dict__.items() if k.isupper() and k != "OTS_LANGUAGES"}
conf.update(
    OTS_ENABLE_PLUGINS=False,
    OTS_LISTENER_ADDRESS="127.0.0.1",
    OTS_LISTENER_PORT=args.api_port,
    OTS_STREAMING_INTERFACE="127.0.0.1",
    OTS_TCP_STREAMING_PORT=args.tcp_port,
    # eud_handler --ssl: an internal port, the upstream of takgate's reoriginate listener.
    OTS_SSL_STREAMING_PORT=args.ssl_port,
    OTS_UDP_PORT=args.udp_port,
    OTS_MARTI_HTTPS_PORT=args.marti_https_port,
    OTS_MEDIAMTX_ENABLE=False,
    OTS_RABBITMQ_SERVER_ADDRESS="127.0.0.1",
)
path = os.path.join(DefaultConfig.OTS_DATA_FOLDER, "config.yml")
with open(path, "w") as f:
    f.write(yaml.safe_dump(conf))
print("wrote", path)
