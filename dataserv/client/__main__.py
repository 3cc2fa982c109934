"""`python -m dataserv.client URL COMMAND`: one farmer request from the command line."""

import sys
from typing import Any, Dict, List, Optional

from twisted.internet import defer
from twisted.python.failure import Failure

from dataserv.client.farmer import FarmerClient, Reply
from dataserv.identity.signing import FarmerKey

USAGE = """usage: python -m dataserv.client URL [--seed TEXT] [--legacy] COMMAND [ARGS]
commands: address, register [PAYOUT], ping, height N, bandwidth UP DOWN,
          audit BLOCK SHA256, status, online, online-json, total, history,
          headers [PATH] (prints signed curl -H arguments for one GET of PATH,
          default this farmer's ping; a DATASERV-V2 pair is accepted once,
          within --auth-timeout seconds)
--legacy: sign as the field clients do (Date and server address only); for
          testing: a farmer that has used DATASERV-V2 is refused legacy headers
options: --seed TEXT  the farmer key's seed (default: dataserv-client)
         -h, --help   show this and exit"""


def main(argv: Optional[List[str]] = None, reactor: Any = None) -> int:
    """Run one command against a server and print the answer."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(USAGE)
        return 0
    seed = "dataserv-client"
    if "--seed" in argv:
        i = argv.index("--seed")
        seed = argv[i + 1]
        del argv[i:i + 2]
    legacy = "--legacy" in argv
    if legacy:
        argv.remove("--legacy")
    if len(argv) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    url, command, args = argv[0], argv[1].replace("-", "_"), argv[2:]
    client = FarmerClient(url, FarmerKey.from_seed(seed.encode()), legacy=legacy)
    method = getattr(client, command, None)
    if method is None:
        print(USAGE, file=sys.stderr)
        return 2
    from twisted.internet import reactor as default_reactor

    reactor = reactor or default_reactor
    outcome: Dict[str, int] = {}

    def show(reply: Reply) -> None:
        print(reply.text if command == "headers" else "%d %s" % (reply.status, reply.text))
        outcome["code"] = 0 if reply.status == 200 else 1

    def failed(failure: Failure) -> None:
        print("error: %s" % failure.getErrorMessage(), file=sys.stderr)
        outcome["code"] = 1

    print("farmer %s" % client.farmer_id, file=sys.stderr)
    d = defer.maybeDeferred(method, *args)
    d.addCallbacks(show, failed)
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    return outcome.get("code", 1)


if __name__ == "__main__":
    sys.exit(main())
