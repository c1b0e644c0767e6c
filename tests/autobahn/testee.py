# Python 2.7 (runs in .venv-autobahn). Autobahn|Testsuite's own echo testee,
# the deterministic reference server (see shared/reference/autobahn.md).
#
# It binds 127.0.0.1:0 itself and writes "PORT\n" atomically to the file
# given as argv[1] once listening. externalPort is set to None so the testee
# does not compare the Host header's port with its own: a proxy that keeps
# the client's Host (as OTS needs) sends the proxy's port.
from __future__ import print_function

import os
import sys

from twisted.internet import reactor

from autobahntestsuite.testee import TesteeServerFactory


def main():
    port_file = sys.argv[1]
    factory = TesteeServerFactory("ws://127.0.0.1")
    factory.externalPort = None
    listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
    port = listening.getHost().port
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.rename(tmp, port_file)
    print("testee listening on 127.0.0.1:%d" % port)
    sys.stdout.flush()
    reactor.run()  # Twisted stops the reactor on SIGTERM/SIGINT


if __name__ == "__main__":
    main()
