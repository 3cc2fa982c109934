"""`python -m dataserv.client URL COMMAND`: one farmer request from the command line."""

import sys
from typing import Any, Callable, Dict, List, Optional

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
          plot --k K --dir DIR [--count N]  (build proof-of-space plots),
          farm --dir DIR  (register the plots, answer challenges until stopped)
          remove-plot PLOT_ID|PLOT_FILE  (stop farming a plot: the server no
          longer challenges or counts it; the file is left alone)
options: --seed TEXT  the farmer key's seed (default: dataserv-client)
         -h, --help   show this and exit"""


def _option(args: List[str], name: str, default: Optional[str] = None) -> Optional[str]:
    """The value after --name in args (removed from args), or default."""
    if name in args:
        i = args.index(name)
        value = args[i + 1]
        del args[i:i + 2]
        return value
    return default


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
    from twisted.internet import reactor as default_reactor

    reactor = reactor or default_reactor
    if command in ("plot", "farm"):
        try:
            method = _proof_command(client, command, args, reactor)
        except (IndexError, ValueError):
            method = None
        args = []
    if method is None:
        print(USAGE, file=sys.stderr)
        return 2
    outcome: Dict[str, int] = {}

    def show(reply: Optional[Reply]) -> None:
        if reply is None or isinstance(reply, list):
            outcome["code"] = 0
            return
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


def _proof_command(client: FarmerClient, command: str, args: List[str],
                   reactor: Any) -> Callable[[], Any]:
    """The plot or farm command as a callable of no arguments."""
    from twisted.internet import threads

    from dataserv.client.farming import Farm, make_plots

    def in_thread(f: Callable[..., Any], *a: Any) -> Any:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *a)

    directory = _option(args, "--dir")
    if directory is None:
        raise ValueError("--dir is required")
    if command == "plot":
        k = int(_option(args, "--k") or "")
        count = int(_option(args, "--count", "1") or "")
        return lambda: make_plots(bytes.fromhex(client.key.nodeid), k, directory, count,
                                  in_thread)
    farm = Farm(client, directory, reactor, in_thread,
                every=float(_option(args, "--every", "10") or ""))
    return farm.run


if __name__ == "__main__":
    sys.exit(main())
