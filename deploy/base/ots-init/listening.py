"""Exit 0 if a socket in this pod listens on TCP port argv[1] (probe for OTS's eud_handler).

Reads /proc/net/tcp{,6} instead of connecting: eud_handler forks a process for every
connection, and its SSL variant blocks its accept loop on a handshake (OTS issue #305), so a
connecting probe costs it work or stalls it. Containers of a pod share one network namespace,
so this sees the pod's listeners; only eud_handler binds the ports it is used for.
"""

import sys

LISTEN = "0A"


def listening(port, tables=("/proc/net/tcp", "/proc/net/tcp6")):
    want = f":{port:04X}"
    for table in tables:
        try:
            with open(table, encoding="ascii") as f:
                rows = f.readlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and fields[1].endswith(want) and fields[3] == LISTEN:
                return True
    return False


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: listening.py PORT")
    sys.exit(0 if listening(int(sys.argv[1])) else 1)
