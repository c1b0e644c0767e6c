"""Run OTS's `eud_handler --ssl` on a pod-internal port (container eud-handler-ssl, OTS image).

OTS 1.7.14 uses one setting, OTS_SSL_STREAMING_PORT, for two things: the port `eud_handler
--ssl` binds, and the port it writes into the data packages, connection strings and ATAK/iTAK
QR codes it makes. In this pod devices reach takgate's cot-tls listener, whose port is what
they must be told (config.yml: base/ots-settings.env, components/loadbalancer), and takgate
re-originates (or passes) each connection to `eud_handler --ssl` on the pod's loopback, which
must bind another port: --bind-port.

This builds eud_handler's app exactly as `eud_handler --ssl` does (its module creates it from
config.yml on import), overrides that one value in the running process only, and calls
eud_handler's own main() with the given arguments. config.yml is not changed, and the API and
the packages keep the advertised port.

Usage: eud_handler_ssl.py --bind-port=PORT --ssl
"""

import sys


def main(argv):
    ports = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("--bind-port=")]
    rest = [a for a in argv[1:] if not a.startswith("--bind-port=")]
    if len(ports) != 1 or not ports[0].isdigit() or not 0 < int(ports[0]) < 65536:
        sys.exit(f"eud_handler_ssl: need one --bind-port=PORT, got {ports}")
    if "--ssl" not in rest:
        sys.exit("eud_handler_ssl: pass --ssl (this launcher only moves the SSL listener)")
    # eud_handler parses sys.argv (also while its module is imported): its own arguments only.
    sys.argv = ["eud_handler", *rest]
    from opentakserver.eud_handler import eud_handler  # noqa: PLC0415 (config.yml is read here)

    advertised = eud_handler.app.config.get("OTS_SSL_STREAMING_PORT")
    eud_handler.app.config["OTS_SSL_STREAMING_PORT"] = int(ports[0])
    print(f"eud_handler_ssl: binding {ports[0]}; clients are told {advertised}", flush=True)
    return eud_handler.main()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
