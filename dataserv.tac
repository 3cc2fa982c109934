# `twistd -ny dataserv.tac`: the same daemon as `twistd dataserv`, configured
# only through DATASERV_* environment variables.
from twisted.application import service
from twisted.internet import reactor

from dataserv.daemon.tap import Options, makeService

options = Options()
options.parseOptions([])
application = service.Application("dataserv")
makeService(options, reactor).setServiceParent(application)
