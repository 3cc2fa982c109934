from twisted.application.service import ServiceMaker

dataserv = ServiceMaker("dataserv", "dataserv.daemon.tap", "dataserv farmer registry", "dataserv")
