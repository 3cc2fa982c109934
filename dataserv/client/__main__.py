"""`python -m dataserv.client URL COMMAND`: one farmer request from the command line."""

import sys

from twisted.internet import defer

from dataserv.client.farmer import FarmerClient
from dataserv.identity.signing import FarmerKey

USAGE = """usage: python -m dataserv.client URL [--seed TEXT] COMMAND [ARGS]
commands: address, register [PAYOUT], ping, height N, bandwidth UP DOWN,
          audit BLOCK SHA256, status, online, online-json, total, history,
          headers (prints signed curl -H arguments for this farmer, valid
          for --auth-timeout seconds),
          plot --k K --dir DIR [--count N]  (build proof-of-space plots),
          farm --dir DIR  (register the plots, answer challenges until stopped)"""


def _option(args, name, default=None):
    """The value after --name in args (removed from args), or default."""
    if name in args:
        i = args.index(name)
        value = args[i + 1]
        del args[i:i + 2]
        return value
    return default



def main(argv=None, reactor=None):
    """Run one command against a server and print the answer."""
    argv = list(sys.argv[1:] if argv is None else argv)
    seed = "dataserv-client"
    if "--seed" in argv:
        i = argv.index("--seed")
        seed = argv[i + 1]
        del argv[i:i + 2]
    if len(argv) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    url, command, args = argv[0], argv[1].replace("-", "_"), argv[2:]
    client = FarmerClient(url, FarmerKey.from_seed(seed.encode()))
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
    outcome = {}

    def show(reply):
        if reply is None or isinstance(reply, list):
            outcome["code"] = 0
            return
        print(reply.text if command == "headers" else "%d %s" % (reply.status, reply.text))
        outcome["code"] = 0 if reply.status == 200 else 1

    def failed(failure):
        print("error: %s" % failure.getErrorMessage(), file=sys.stderr)
        outcome["code"] = 1

    print("farmer %s" % client.farmer_id, file=sys.stderr)
    d = defer.maybeDeferred(method, *args)
    d.addCallbacks(show, failed)
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    return outcome.get("code", 1)


def _proof_command(client, command, args, reactor):
    """The plot or farm command as a callable of no arguments."""
    from twisted.internet import threads

    from dataserv.client.farming import Farm, make_plots

    def in_thread(f, *a):
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *a)

    directory = _option(args, "--dir")
    if directory is None:
        raise ValueError("--dir is required")
    if command == "plot":
        k = int(_option(args, "--k"))
        count = int(_option(args, "--count", "1"))
        return lambda: make_plots(bytes.fromhex(client.key.nodeid), k, directory, count,
                                  in_thread)
    farm = Farm(client, directory, reactor, in_thread,
                every=float(_option(args, "--every", "10")))
    return farm.run


if __name__ == "__main__":
    sys.exit(main())
