from twisted.application.service import ServiceMaker

dataserv = ServiceMaker("dataserv", "dataserv.tap", "dataserv farmer registry", "dataserv")
